package metrics_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/metrics"
)

// redisReply is an error reply from Redis (go-redis's redis.Error).
type redisReply string

func (e redisReply) Error() string { return string(e) }
func (redisReply) RedisError()     {}

// TestRedisObserve: answers keep the replica's Redis up (an absent key and
// error replies included), failures and "cannot serve" replies take it
// down and count, cancellations say nothing.
func TestRedisObserve(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		up     float64
		errors float64
	}{
		{"success", nil, 1, 0},
		{"absent key", redis.Nil, 1, 0},
		{"a script's error reply", redisReply("NOSCRIPT No matching script"), 1, 0},
		{"timeout", fmt.Errorf("get: %w", context.DeadlineExceeded), 0, 1},
		{"refused", errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"), 0, 1},
		{"read-only replica after a failover", redisReply("READONLY You can't write against a read only replica."), 0, 1},
		{"cluster down", redisReply("CLUSTERDOWN The cluster is down"), 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New(prometheus.NewRegistry())
			m.Redis.Observe(tc.err)
			m.Redis.Observe(context.Canceled) // changes nothing
			if got := testutil.ToFloat64(m.Redis.Up); got != tc.up {
				t.Errorf("wxbroker_redis_up = %v; want %v", got, tc.up)
			}
			if got := testutil.ToFloat64(m.Redis.Errors); got != tc.errors {
				t.Errorf("wxbroker_redis_errors_total = %v; want %v", got, tc.errors)
			}
		})
	}
}

// TestReloadAndTLS: the reload series exist from start-up with the start
// as the last success; the certificate series only once a certificate is set.
func TestReloadAndTLS(t *testing.T) {
	before := time.Now()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	if got := testutil.ToFloat64(m.Reload.LastSuccess); got < float64(before.Unix()) || got > float64(time.Now().Unix()+1) {
		t.Errorf("last reload success = %v at start-up; want the start time (about %d)", got, before.Unix())
	}
	for _, r := range []string{metrics.ReloadSuccess, metrics.ReloadFailure} {
		if got := testutil.ToFloat64(m.Reload.Total.WithLabelValues(r)); got != 0 {
			t.Errorf("wxbroker_config_reload_total{result=%q} = %v at start-up; want 0", r, got)
		}
	}
	m.Reload.Failed()
	at := time.Unix(2000000000, 0)
	m.Reload.Succeeded(at)
	if got := testutil.ToFloat64(m.Reload.Total.WithLabelValues(metrics.ReloadFailure)); got != 1 {
		t.Errorf("failures = %v; want 1", got)
	}
	if got := testutil.ToFloat64(m.Reload.LastSuccess); got != 2000000000 {
		t.Errorf("last reload success = %v; want 2000000000", got)
	}
	if n := testutil.CollectAndCount(m.TLSCertExpiry); n != 0 {
		t.Errorf("%d certificate series without TLS; want none", n)
	}
	m.SetTLSCertificate(&x509.Certificate{NotAfter: time.Unix(1900000000, 0)})
	if got := testutil.ToFloat64(m.TLSCertExpiry.WithLabelValues()); got != 1900000000 {
		t.Errorf("wxbroker_tls_certificate_expiry_timestamp_seconds = %v; want 1900000000", got)
	}
}
