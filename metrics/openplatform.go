package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Authorizer states, the state label of wxbroker_open_platform_authorizers.
const (
	AuthorizerActive               = "active"
	AuthorizerNeedsReauthorization = "needs_reauthorization"
	AuthorizerRevoked              = "revoked"
)

// OpenPlatform holds the Open Platform collectors of the credential engine
// (docs/METRICS.md). There is no per-authorizer series: a platform with
// 10,000 authorizers exports a handful of series per component. Its
// methods are safe for concurrent use.
type OpenPlatform struct {
	// Authorizers counts a component's authorizers by state (active,
	// needs_reauthorization, revoked); all three exist at 0 per component.
	Authorizers *prometheus.GaugeVec // wx_namespace, component_appid, state
	// Overdue counts active authorizers whose token is missing or past its
	// refresh deadline; the leader only (0 elsewhere).
	Overdue *prometheus.GaugeVec // wx_namespace, component_appid
	// VerifyTicket is the CreateTime of the latest stored
	// component_verify_ticket; absent when none is known.
	VerifyTicket *prometheus.GaugeVec // wx_namespace, component_appid
}

func newOpenPlatform(f promauto.Factory) OpenPlatform {
	return OpenPlatform{
		Authorizers: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxbroker_open_platform_authorizers",
			Help: "Authorizers of an Open Platform component by state: active, needs_reauthorization (61023: the merchant must authorize again, or import a refresh token), revoked.",
		}, []string{"wx_namespace", "component_appid", "state"}),
		Overdue: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxbroker_open_platform_authorizers_overdue",
			Help: "Active authorizers whose access token is missing or past its refresh deadline (not refreshed in time); exported by the leader, 0 elsewhere.",
		}, []string{"wx_namespace", "component_appid"}),
		VerifyTicket: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxbroker_open_platform_verify_ticket_timestamp_seconds",
			Help: "Unix time (CreateTime) of the latest component_verify_ticket stored for the component; absent when none is known.",
		}, []string{"wx_namespace", "component_appid"}),
	}
}

// SeedComponent creates a component's series at 0 (every state, overdue).
func (o OpenPlatform) SeedComponent(ns, component string) {
	for _, st := range []string{AuthorizerActive, AuthorizerNeedsReauthorization, AuthorizerRevoked} {
		o.Authorizers.WithLabelValues(ns, component, st)
	}
	o.Overdue.WithLabelValues(ns, component)
}

// DropComponent deletes a removed component's series.
func (o OpenPlatform) DropComponent(ns, component string) {
	m := prometheus.Labels{"wx_namespace": ns, "component_appid": component}
	o.Authorizers.DeletePartialMatch(m)
	o.Overdue.DeletePartialMatch(m)
	o.VerifyTicket.DeletePartialMatch(m)
}
