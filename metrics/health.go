package metrics

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/wxbroker/wxbroker/wechat"
)

// Daily limits WeChat documents for the credential APIs, exported as
// wxbroker_wechat_quota_limit. getticket has no documented daily figure and
// is therefore not exported (its calls are still counted).
const (
	// QuotaLimitToken is the documented daily /cgi-bin/token quota of an
	// official account (mini programs are reported at 10000, unconfirmed;
	// the lower figure warns earlier).
	QuotaLimitToken = 2000
	// QuotaLimitStableToken is the documented daily /cgi-bin/stable_token
	// quota of an account.
	QuotaLimitStableToken = 500000
)

// newHealth builds the collectors alerts rely on to page on the first
// event: state gauges (refresh due, retries stopped), the limits the quota
// gauges compare with, and the build.
func (m *Metrics) newHealth(f promauto.Factory) {
	m.RefreshDue = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxbroker_token_refresh_due_timestamp_seconds",
		Help: "Unix time by which the current token or ticket should have been replaced (the end of its refresh window); in the past means the refresh is late.",
	}, []string{"wx_namespace", "appid", "kind"})
	m.RefreshStopped = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxbroker_refresh_stopped",
		Help: "1 while the leader has stopped retrying a credential after an errcode that retrying cannot fix (the errcode label says which); absent otherwise.",
	}, []string{"wx_namespace", "appid", "kind", "errcode"})
	m.WeChatQuotaLimit = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxbroker_wechat_quota_limit",
		Help: "Daily call limit WeChat documents for a credential API (compare with wxbroker_wechat_quota_used).",
	}, []string{"api"})
	m.ForcedRefreshUsed = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxbroker_forced_refresh_used",
		Help: "Forced (invalidation-triggered) refreshes made today (UTC+8 day) per app, as the leader counts them.",
	}, []string{"wx_namespace", "appid"})
	m.ForcedRefreshLimit = f.NewGauge(prometheus.GaugeOpts{
		Name: "wxbroker_forced_refresh_limit",
		Help: "Forced refreshes allowed per app per UTC+8 day (refresh.force_daily_cap).",
	})
	m.BuildInfo = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wxbroker_build_info",
		Help: "Always 1; the labels name the build: module version, VCS revision, Go version.",
	}, []string{"version", "revision", "goversion"})

	m.WeChatQuotaLimit.WithLabelValues(wechat.APIToken).Set(QuotaLimitToken)
	m.WeChatQuotaLimit.WithLabelValues(wechat.APIStableToken).Set(QuotaLimitStableToken)
	version, revision := buildVersion()
	m.BuildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)
}

// buildVersion reads the module version and VCS revision the Go toolchain
// embedded in the binary ("unknown" when it did not, e.g. a build outside a
// checkout; "(devel)" for a build from a checkout).
func buildVersion() (version, revision string) {
	version, revision = "unknown", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision
	}
	if bi.Main.Version != "" {
		version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			revision = s.Value
			if len(revision) > 12 {
				revision = revision[:12]
			}
		}
	}
	return version, revision
}
