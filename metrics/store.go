package metrics

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
)

// Redis holds this replica's view of its Redis: whether the last command
// reached it, and how long commands take. Every replica exports its own, so
// an outage seen by one replica only (its network) shows as that replica's.
type Redis struct {
	Up       prometheus.Gauge     // 1: the last command succeeded; 0: it failed
	Duration prometheus.Histogram // command and pipeline round trips
	Errors   prometheus.Counter
}

func newRedis(f promauto.Factory) Redis {
	r := Redis{
		Up: f.NewGauge(prometheus.GaugeOpts{
			Name: "wxbroker_redis_up",
			Help: "1 while this replica's last Redis command succeeded (redis.Nil counts as success), 0 since one failed.",
		}),
		Duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "wxbroker_redis_command_duration_seconds",
			Help:    "Round-trip time of this replica's Redis commands and pipelines, failures included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		Errors: f.NewCounter(prometheus.CounterOpts{
			Name: "wxbroker_redis_errors_total",
			Help: "Redis commands and pipelines of this replica that failed (timeouts, refused connections, READONLY, ...; redis.Nil and cancellations excluded).",
		}),
	}
	r.Up.Set(1)
	return r
}

// Observe records the outcome of one Redis operation. Redis answered when
// err is nil, redis.Nil or an error reply (NOSCRIPT, a script's own error),
// except replies that say it cannot serve (READONLY, LOADING, CLUSTERDOWN,
// MASTERDOWN). A cancelled context or a closed client says nothing about
// Redis and is ignored.
func (r Redis) Observe(err error) {
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed):
	case redisAnswered(err):
		r.Up.Set(1)
	default:
		r.Up.Set(0)
		r.Errors.Inc()
	}
}

func redisAnswered(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return true
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	for _, p := range []string{"READONLY", "LOADING", "CLUSTERDOWN", "MASTERDOWN"} {
		if strings.HasPrefix(re.Error(), p) {
			return false
		}
	}
	return true
}

// Hook returns a go-redis hook that times every command and pipeline and
// records its outcome (Observe). Add it to the client the broker uses.
func (r Redis) Hook() redis.Hook { return redisHook{r} }

type redisHook struct{ r Redis }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.r.Duration.Observe(time.Since(start).Seconds())
		h.r.Observe(err)
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.r.Duration.Observe(time.Since(start).Seconds())
		h.r.Observe(err)
		return err
	}
}

// SetTLSCertificate exports the expiry of the certificate the listeners
// serve (wxbroker_tls_certificate_expiry_timestamp_seconds); call it
// whenever tls.cert_file is loaded. Without TLS the series is absent.
func (m *Metrics) SetTLSCertificate(leaf *x509.Certificate) {
	m.TLSCertExpiry.WithLabelValues().Set(unixSeconds(leaf.NotAfter))
}
