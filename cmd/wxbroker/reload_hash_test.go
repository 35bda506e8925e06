package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// TestConfigHashGauge: wxbroker_config_hash holds the hash of the
// configuration in use from start-up, follows a successful reload and stays
// put when a reload is refused.
func TestConfigHashGauge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wxbroker.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const redisAddr, baseURL = "127.0.0.1:1", "http://127.0.0.1:1"
	write(reloadConfig("r0", 18080, redisAddr, "hashtest", baseURL, false, true))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry())
	r := newReloader(path, nil, zap.NewNop(), m.Reload, nil, cfg)
	gauge := func() uint64 { return uint64(testutil.ToFloat64(m.Reload.Hash)) }
	initial := gauge()
	if initial == 0 || initial != cfg.Hash() {
		t.Fatalf("wxbroker_config_hash at start = %x; want the configuration's hash %x", initial, cfg.Hash())
	}

	// A successful reload (a new app, a retired client key) changes it.
	write(reloadConfig("r0", 18080, redisAddr, "hashtest", baseURL, true, false))
	if err := r.Reload(t.Context()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	next, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	reloaded := gauge()
	if reloaded == initial || reloaded != next.Hash() {
		t.Fatalf("wxbroker_config_hash after a reload = %x (was %x); want the new configuration's hash %x", reloaded, initial, next.Hash())
	}

	// A refused reload (an invalid file, then a restart-only change) leaves it.
	write("namespaces:\n  prod:\n    apps:\n      - {appid: not-an-appid, secret: x}\n")
	if err := r.Reload(t.Context()); err == nil {
		t.Fatal("Reload of an invalid file succeeded")
	}
	write(reloadConfig("r0", 18081, redisAddr, "hashtest", baseURL, false, true))
	if err := r.Reload(t.Context()); err == nil {
		t.Fatal("Reload of a changed listen address succeeded")
	}
	if got := gauge(); got != reloaded {
		t.Errorf("wxbroker_config_hash after refused reloads = %x; want it unchanged at %x", got, reloaded)
	}
	if got := testutil.ToFloat64(m.Reload.Total.WithLabelValues(metrics.ReloadFailure)); got != 2 {
		t.Errorf("failed reloads counted = %v; want 2", got)
	}
}
