package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

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
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	// Vectors only appear once they have a child.
	m.TokenRefresh.WithLabelValues("prod", "wx1", "access_token", metrics.ResultSuccess)
	m.TokenRefreshDuration.WithLabelValues("prod", "access_token")
	m.TokenExpiry.WithLabelValues("prod", "wx1", "access_token")
	m.TokenLastRefreshSuccess.WithLabelValues("prod", "wx1", "access_token")
	m.InvalidCredential.WithLabelValues("prod", "wx1", metrics.SourceClient)
	m.ExternalInvalidation.WithLabelValues("prod", "wx1")
	m.WeChatErrors.WithLabelValues("prod", "wx1", "token", "40001")
	m.WeChatQuotaUsed.WithLabelValues("prod", "wx1", "token")
	m.TokenRequests.WithLabelValues("prod", metrics.RequestOK)
	m.Login.WithLabelValues(metrics.FlowMiniProgram, metrics.ResultSuccess)
	m.HTTPRequestDuration.WithLabelValues("internal", "/healthz", "200")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{
		"wxbroker_leader", "wxbroker_leader_epoch", "wxbroker_leader_transitions_total",
		"wxbroker_fenced_writes_rejected_total", "wxbroker_token_refresh_total",
		"wxbroker_token_refresh_duration_seconds", "wxbroker_token_expiry_timestamp_seconds",
		"wxbroker_token_last_refresh_success_timestamp_seconds", "wxbroker_invalid_credential_total",
		"wxbroker_external_invalidation_total", "wxbroker_wechat_errors_total", "wxbroker_wechat_quota_used",
		"wxbroker_token_requests_total", "wxbroker_login_total", "wxbroker_http_request_duration_seconds",
	} {
		if !got[name] {
			t.Errorf("metric %s not registered", name)
		}
	}
}
