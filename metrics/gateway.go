package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Result label values of wxbroker_gateway_requests_total and
// wxbroker_gateway_retries_total.
const (
	GatewayOK           = "ok"             // forwarded; WeChat answered errcode 0 or a non-JSON body
	GatewayWeChatError  = "wechat_error"   // forwarded; WeChat answered a non-zero errcode
	GatewayUnauthorized = "unauthorized"   // no, unknown or expired credential
	GatewayForbidden    = "forbidden"      // the caller may not use this app or API
	GatewayNotFound     = "not_found"      // the app is not configured
	GatewayTooLarge     = "too_large"      // body over gateway.max_body_bytes
	GatewayBusy         = "busy"           // gateway.max_concurrent reached
	GatewayUnavailable  = "unavailable"    // no valid token, or Redis could not name the token
	GatewayUnreachable  = "unreachable"    // WeChat could not be reached (errcode -1 answered)
	GatewayClientError  = "client_error"   // the caller's request body came too slowly or broke off (errcode -1 answered)
	GatewayHTTPError    = "http_error"     // WeChat (or a proxy before it) answered a non-2xx status, passed on
	RetrySuccess        = "success"        // the re-sent request was accepted
	RetryFailed         = "failed"         // the re-sent request met a token error again
	RetryLimited        = "limited"        // the forced-refresh budget was spent: not re-sent
	RetryNoToken        = "no_token"       // no new token arrived in time: not re-sent
	RetryNotReplayable  = "not_replayable" // the body was too large to keep: not re-sent
	RetryNotConfirmed   = "not_confirmed"  // the check with WeChat did not confirm the token failed: not re-sent
	RetryRefused        = "refused"        // the caller is over clients[].invalidate_per_minute: not re-sent
)

// Gateway holds the collectors of the WeChat API gateway.
type Gateway struct {
	Requests *prometheus.CounterVec   // wx_namespace, appid, api, result, errcode
	Duration *prometheus.HistogramVec // api
	Retries  *prometheus.CounterVec   // wx_namespace, appid, result
	Timeout  prometheus.Gauge         // gateway.timeout, set when the gateway is enabled
}

func newGateway(f promauto.Factory) Gateway {
	return Gateway{
		Requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_gateway_requests_total",
			Help: "Requests through the WeChat API gateway by app, API path (known paths, else other), result (ok, wechat_error, http_error, or the gateway's own answer: unauthorized, forbidden, not_found, too_large, busy, unavailable, unreachable when WeChat did not answer, client_error when the caller's body came too slowly or broke off) and the errcode answered.",
		}, []string{"wx_namespace", "appid", "api", "result", "errcode"}),
		Duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wxbroker_gateway_request_duration_seconds",
			Help:    "Duration of gateway requests, WeChat's answer and any retry included, by API path.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"api"}),
		Retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_gateway_retries_total",
			Help: "Gateway requests that met 40001/42001/40014 with the injected token, by what the one retry did.",
		}, []string{"wx_namespace", "appid", "result"}),
		Timeout: f.NewGauge(prometheus.GaugeOpts{
			Name: "wxbroker_gateway_timeout_seconds",
			Help: "gateway.timeout: the longest a gateway request, its retry included, may take (0 while the gateway is off).",
		}),
	}
}
