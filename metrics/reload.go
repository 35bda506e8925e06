package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Result label values of wxbroker_config_reload_total.
const (
	ReloadSuccess = "success"
	ReloadFailure = "failure"
)

// Reload holds the configuration reload collectors: how reloads ended and
// when the configuration in use was last loaded. Both results exist at 0
// from start-up and the last-success time starts at the start-up load, so
// the WxbrokerConfigReloadFailed alert reads an increase from the first
// failure on. Hash identifies the configuration in use (config.Config.Hash):
// set at start-up and by every successful reload. Its methods are safe for
// concurrent use.
type Reload struct {
	Total       *prometheus.CounterVec // result
	LastSuccess prometheus.Gauge
	Hash        prometheus.Gauge
}

func newReload(f promauto.Factory, start time.Time) Reload {
	r := Reload{
		Total: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_config_reload_total",
			Help: "Configuration reloads (SIGHUP) by result: success (the new configuration is in use), failure (the old one stays).",
		}, []string{"result"}),
		LastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "wxbroker_config_last_reload_success_timestamp_seconds",
			Help: "Unix time at which the configuration in use was loaded: start-up, or the last successful reload.",
		}),
		Hash: f.NewGauge(prometheus.GaugeOpts{
			Name: "wxbroker_config_hash",
			Help: "Hash of the configuration in use (first 48 bits of the SHA-256 of its canonical form, secrets as digests): replicas with the same configuration report the same value.",
		}),
	}
	r.Total.WithLabelValues(ReloadSuccess)
	r.Total.WithLabelValues(ReloadFailure)
	r.LastSuccess.Set(unixSeconds(start))
	return r
}

// Succeeded records a reload whose configuration is in use since at.
func (r Reload) Succeeded(at time.Time) {
	r.Total.WithLabelValues(ReloadSuccess).Inc()
	r.LastSuccess.Set(unixSeconds(at))
}

// Failed records a reload that was refused: the previous configuration
// stays in use.
func (r Reload) Failed() {
	r.Total.WithLabelValues(ReloadFailure).Inc()
}

// InUse records the hash of the configuration now in use
// (config.Config.Hash): at start-up and after a successful reload.
func (r Reload) InUse(hash uint64) {
	r.Hash.Set(float64(hash))
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1e3 }
