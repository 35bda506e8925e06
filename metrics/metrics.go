// Package metrics defines every Prometheus collector wxbroker exports, in one
// place, registered on an injected registry (docs/METRICS.md). Labels come from
// configuration or fixed sets only: never openids, user ids, IPs or raw URLs.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/wxbroker/wxbroker/wechat"
)

// Label values of the fixed sets.
const (
	ResultSuccess = "success"
	ResultError   = "error"

	SourceClient = "client"
	SourceBroker = "broker"
	SourceLogin  = "login"
	SourceProxy  = "proxy"
	// SourceCompat is a report inferred on the WeChat-compatible credential
	// routes: stable_token with force_refresh, or an SDK's repeated fetch.
	SourceCompat = "compat"

	RequestOK           = "ok"
	RequestUnauthorized = "unauthorized"
	RequestForbidden    = "forbidden"
	RequestNotFound     = "not_found"
	RequestUnavailable  = "unavailable"

	FlowMiniProgram = "miniprogram"
	FlowWeb         = "web"
	FlowRefresh     = "refresh"
	FlowLogout      = "logout"
	FlowPhone       = "phone"
)

// Metrics holds every collector. It is safe for concurrent use.
type Metrics struct {
	Leader                  prometheus.Gauge
	LeaderEpoch             prometheus.Gauge
	LeaderTransitions       prometheus.Counter
	FencedWritesRejected    prometheus.Counter
	TokenRefresh            *prometheus.CounterVec   // wx_namespace, appid, kind, result
	TokenRefreshDuration    *prometheus.HistogramVec // wx_namespace, kind
	TokenExpiry             *prometheus.GaugeVec     // wx_namespace, appid, kind
	TokenLastRefreshSuccess *prometheus.GaugeVec     // wx_namespace, appid, kind
	InvalidCredential       *prometheus.CounterVec   // wx_namespace, appid, source
	ExternalInvalidation    *prometheus.CounterVec   // wx_namespace, appid
	WeChatErrors            *prometheus.CounterVec   // wx_namespace, appid, api, errcode
	WeChatQuotaUsed         *prometheus.GaugeVec     // wx_namespace, appid, api
	TokenRequests           *prometheus.CounterVec   // wx_namespace, appid, result
	Login                   *prometheus.CounterVec   // flow, result
	HTTPRequestDuration     *prometheus.HistogramVec // listener, route, code

	// Refresh state and budgets (see health.go).
	RefreshDue         *prometheus.GaugeVec // wx_namespace, appid, kind
	RefreshStopped     *prometheus.GaugeVec // wx_namespace, appid, kind, errcode
	WeChatQuotaLimit   *prometheus.GaugeVec // api
	ForcedRefreshUsed  *prometheus.GaugeVec // wx_namespace, appid
	ForcedRefreshLimit prometheus.Gauge
	BuildInfo          *prometheus.GaugeVec // version, revision, goversion

	Gateway      Gateway                // the WeChat API gateway (gateway.go)
	FalseReports *prometheus.CounterVec // wx_namespace, appid, source

	Reload        Reload               // configuration reloads (reload.go)
	Redis         Redis                // this replica's Redis round trips (store.go)
	OpenPlatform  OpenPlatform         // Open Platform components and authorizers (openplatform.go)
	TLSCertExpiry *prometheus.GaugeVec // no labels; absent without tls (SetTLSCertificate)

	// OpenPlatformEvents counts the pushes to the components' event URLs
	// (openplatform_events.go): wx_namespace, component_appid, info_type, result.
	OpenPlatformEvents *prometheus.CounterVec
}

// New registers every collector on reg and returns them. It panics, as
// promauto does, if a collector is already registered on reg.
func New(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		Gateway:            newGateway(f),
		Reload:             newReload(f, time.Now()),
		Redis:              newRedis(f),
		OpenPlatform:       newOpenPlatform(f),
		OpenPlatformEvents: newOpenPlatformEvents(f),
		TLSCertExpiry: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxbroker_tls_certificate_expiry_timestamp_seconds",
			Help: "Unix time at which the certificate of tls.cert_file expires (its NotAfter); absent without TLS.",
		}, nil),
		Leader: f.NewGauge(prometheus.GaugeOpts{
			Name: "wxbroker_leader", Help: "1 while this replica is the leader, 0 otherwise.",
		}),
		LeaderEpoch: f.NewGauge(prometheus.GaugeOpts{
			Name: "wxbroker_leader_epoch", Help: "Fencing epoch of the current leadership as last seen by this replica.",
		}),
		LeaderTransitions: f.NewCounter(prometheus.CounterOpts{
			Name: "wxbroker_leader_transitions_total", Help: "Times this replica became or stopped being the leader.",
		}),
		FencedWritesRejected: f.NewCounter(prometheus.CounterOpts{
			Name: "wxbroker_fenced_writes_rejected_total", Help: "Token writes refused because the writer no longer held the lock or a newer epoch had written.",
		}),
		TokenRefresh: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_token_refresh_total", Help: "Token and ticket refresh attempts by result.",
		}, []string{"wx_namespace", "appid", "kind", "result"}),
		TokenRefreshDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wxbroker_token_refresh_duration_seconds", Help: "Duration of token and ticket refreshes, WeChat call and fenced write included.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"wx_namespace", "kind"}),
		TokenExpiry: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxbroker_token_expiry_timestamp_seconds", Help: "Unix time at which the current token or ticket expires.",
		}, []string{"wx_namespace", "appid", "kind"}),
		TokenLastRefreshSuccess: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxbroker_token_last_refresh_success_timestamp_seconds", Help: "Unix time of the last successful refresh.",
		}, []string{"wx_namespace", "appid", "kind"}),
		InvalidCredential: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_invalid_credential_total", Help: "Errcodes 40001/42001/40014 met or reported, by who met them.",
		}, []string{"wx_namespace", "appid", "source"}),
		ExternalInvalidation: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_external_invalidation_total", Help: "Current tokens invalidated by a fetch outside the broker.",
		}, []string{"wx_namespace", "appid"}),
		WeChatErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_wechat_errors_total", Help: "Errors answered by WeChat, by API and errcode (known codes, else other; transport errors as -2).",
		}, []string{"wx_namespace", "appid", "api", "errcode"}),
		WeChatQuotaUsed: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxbroker_wechat_quota_used", Help: "Credential calls made today (UTC+8 day, when WeChat resets quotas).",
		}, []string{"wx_namespace", "appid", "api"}),
		TokenRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_token_requests_total", Help: "Token and ticket reads by app and result (appid \"unknown\" for apps that are not configured).",
		}, []string{"wx_namespace", "appid", "result"}),
		Login: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_login_total", Help: "User-login operations by flow and result.",
		}, []string{"flow", "result"}),
		HTTPRequestDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wxbroker_http_request_duration_seconds", Help: "HTTP request latency by listener, route template and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"listener", "route", "code"}),
		FalseReports: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_false_reports_total", Help: "Reports of a failed token (without WeChat's answer as proof) that WeChat still accepted when checked; answered with the same token.",
		}, []string{"wx_namespace", "appid", "source"}),
	}
	m.newHealth(f)
	return m
}

// knownErrcodes is the allowlist of errcode label values: every code the
// wechat package explains, plus -2 for transport errors. It is never
// modified after package initialisation.
var knownErrcodes = func() map[int]bool {
	m := map[int]bool{-2: true}
	for _, c := range wechat.KnownCodes() {
		m[c] = true
	}
	return m
}()

// ErrcodeLabel maps a WeChat errcode to a bounded label value: the code itself
// when it is known, "other" otherwise. Use -2 for transport errors.
func ErrcodeLabel(code int) string {
	if knownErrcodes[code] {
		return strconv.Itoa(code)
	}
	return "other"
}
