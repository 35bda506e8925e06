package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Result label values of wxbroker_open_platform_events_total: what the
// receiver of a component's authorization-event URL did with one push.
const (
	EventAccepted       = "accepted"        // verified, decrypted, handled (or an unknown InfoType, ignored)
	EventBadSignature   = "bad_signature"   // msg_signature does not sign the push with the component's token
	EventBadAppID       = "bad_appid"       // the push names another appid than its URL, or an unknown component
	EventReplay         = "replay"          // the same timestamp and nonce were accepted before
	EventStaleTimestamp = "stale_timestamp" // the timestamp lies too far from now
	EventMalformed      = "malformed"       // not WeChat's envelope, a query parameter missing, undecryptable, too large
	EventError          = "error"           // verified, but storing or handling it failed
)

// Label values of the info_type of a push that was not decrypted, and of
// a component_appid (and namespace) that is not configured.
const (
	EventInfoUnknown = "unknown" // not decrypted, or an unknown component
	EventInfoOther   = "other"   // decrypted, an InfoType the broker does not act on
	EventUnknown     = "unknown" // wx_namespace and component_appid of an unknown component path
)

// newOpenPlatformEvents registers wxbroker_open_platform_events_total.
func newOpenPlatformEvents(f promauto.Factory) *prometheus.CounterVec {
	return f.NewCounterVec(prometheus.CounterOpts{
		Name: "wxbroker_open_platform_events_total",
		Help: "Pushes to a component's authorization-event URL (POST /open/{component_appid}/events) by component, InfoType " +
			"(component_verify_ticket, authorized, updateauthorized, unauthorized, other; unknown when not decrypted) and result " +
			"(accepted, bad_signature, bad_appid, replay, stale_timestamp, malformed, error).",
	}, []string{"wx_namespace", "component_appid", "info_type", "result"})
}
