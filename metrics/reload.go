package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Results of a configuration reload (wxbroker_config_reload_total).
const (
	ReloadSuccess = "success"
	ReloadFailure = "failure"
)

// Reload holds the collectors of runtime configuration reloads (SIGHUP,
// POST /v1/admin/reload). It is safe for concurrent use.
type Reload struct {
	Total       *prometheus.CounterVec // result: success, failure
	LastSuccess prometheus.Gauge       // unix time of the last reload that took effect
}

// newReload registers the reload collectors. Both result series exist from
// start-up, so the first failed reload shows as an increase.
func newReload(f promauto.Factory) Reload {
	r := Reload{
		Total: f.NewCounterVec(prometheus.CounterOpts{
			Name: "wxbroker_config_reload_total",
			Help: "Configuration reloads (SIGHUP, POST /v1/admin/reload) by result; a failed reload changes nothing.",
		}, []string{"result"}),
		LastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "wxbroker_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load (start-up or reload).",
		}),
	}
	r.Total.WithLabelValues(ReloadSuccess)
	r.Total.WithLabelValues(ReloadFailure)
	return r
}
