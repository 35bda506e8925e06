package metrics_test

import (
	"testing"

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
	} {
		if !got[name] {
			t.Errorf("metric %s not registered", name)
		}
	}
}
