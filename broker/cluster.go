package broker

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// stateReloader is what *redis.ClusterClient offers to refresh its slot map.
// Without it the client keeps routing the broker's hash slot to a master
// that died until its periodic reload (a minute), so a cluster failover would
// leave the broker without a leader that long instead of the cluster's
// node-timeout plus lock_ttl.
type stateReloader interface {
	ReloadState(ctx context.Context)
}

var _ stateReloader = (*redis.ClusterClient)(nil)

// reloadClusterState asks a Redis Cluster client to reload its slot map (it
// does so in the background, coalescing requests); other clients ignore it.
// It is called on every Redis error and when a term is lost.
func (b *core) reloadClusterState(reason string) {
	if !b.store.reloadClusterState() {
		return
	}
	now := time.Now().UnixNano()
	if last := b.lastReload.Load(); now-last < int64(time.Second) || !b.lastReload.CompareAndSwap(last, now) {
		return
	}
	b.log.Debug("reloading redis cluster slot map", zap.String("reason", reason))
}
