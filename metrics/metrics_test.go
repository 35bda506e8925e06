package metrics_test

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxbroker/wxbroker/metrics"
)

func TestErrcodeLabelIsBounded(t *testing.T) {
	tests := []struct {
		code int
		want string
	}{
		{40001, "40001"},
		{45009, "45009"},
		{-1, "-1"},
		{-2, "-2"},
		{48006, "48006"},
		{12345, "other"},
		{0, "0"},
	}
	for _, tt := range tests {
		if got := metrics.ErrcodeLabel(tt.code); got != tt.want {
			t.Errorf("ErrcodeLabel(%d) = %q; want %q", tt.code, got, tt.want)
		}
	}
}

func TestNewRegistersEveryDesignMetric(t *testing.T) {
	got := registeredNames(t)
	for _, name := range []string{
		"wxbroker_leader", "wxbroker_leader_epoch", "wxbroker_leader_transitions_total",
		"wxbroker_fenced_writes_rejected_total", "wxbroker_token_refresh_total",
		"wxbroker_token_refresh_duration_seconds", "wxbroker_token_expiry_timestamp_seconds",
		"wxbroker_token_last_refresh_success_timestamp_seconds", "wxbroker_invalid_credential_total",
		"wxbroker_external_invalidation_total", "wxbroker_wechat_errors_total", "wxbroker_wechat_quota_used",
		"wxbroker_token_requests_total", "wxbroker_login_total", "wxbroker_http_request_duration_seconds",
		"wxbroker_token_refresh_due_timestamp_seconds", "wxbroker_refresh_stopped", "wxbroker_wechat_quota_limit",
		"wxbroker_forced_refresh_used", "wxbroker_forced_refresh_limit", "wxbroker_build_info",
	} {
		if !got[name] {
			t.Errorf("metric %s not registered", name)
		}
	}
}

// TestBuildInfoAndLimits checks the series metrics.New sets by itself: the
// build (Go version of this binary) and the documented daily quota limits.
func TestBuildInfoAndLimits(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "wxbroker_build_info" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == "goversion" && lp.GetValue() == runtime.Version() && s.GetGauge().GetValue() == 1 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("wxbroker_build_info{goversion=%q} 1 not exported", runtime.Version())
	}
	for api, want := range map[string]float64{"token": 2000, "stable_token": 500000} {
		if got := testutil.ToFloat64(m.WeChatQuotaLimit.WithLabelValues(api)); got != want {
			t.Errorf("wxbroker_wechat_quota_limit{api=%q} = %v; want %v", api, got, want)
		}
	}
}

// registeredNames returns every series name metrics.New exposes once each
// labelled collector has a child, histogram series included.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.TokenRefresh.WithLabelValues("n", "a", "k", "r")
	m.TokenRefreshDuration.WithLabelValues("n", "k")
	m.TokenExpiry.WithLabelValues("n", "a", "k")
	m.TokenLastRefreshSuccess.WithLabelValues("n", "a", "k")
	m.InvalidCredential.WithLabelValues("n", "a", "s")
	m.ExternalInvalidation.WithLabelValues("n", "a")
	m.WeChatErrors.WithLabelValues("n", "a", "api", "e")
	m.WeChatQuotaUsed.WithLabelValues("n", "a", "api")
	m.TokenRequests.WithLabelValues("n", "a", "r")
	m.Login.WithLabelValues("f", "r")
	m.HTTPRequestDuration.WithLabelValues("l", "r", "c")
	m.RefreshDue.WithLabelValues("n", "a", "k")
	m.RefreshStopped.WithLabelValues("n", "a", "k", "e")
	m.ForcedRefreshUsed.WithLabelValues("n", "a")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		names[n] = true
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			names[n+s] = true
		}
	}
	return names
}
