package broker

import (
	"time"

	"go.uber.org/zap"
)

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
