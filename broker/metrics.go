package broker

import (
	"context"
	"time"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// The alerts page on the first event, so every per-app series they use
// exists from start-up (a counter first seen at 1 has no increase), and
// leader-only gauges never outlive the leadership or the UTC+8 day they
// describe (a former leader's stale count must not page).

// seedMetrics creates, at 0, every per-app series an alert reads as an
// increase, exports the forced-refresh cap, and gives every item a refresh
// deadline of start plus the time a leader needs to fetch a first token, so
// an app that never gets one shows as late.
func (b *Broker) seedMetrics(start time.Time) {
	b.m.ForcedRefreshLimit.Set(float64(b.cfg.Refresh.ForceDailyCap))
	first := start.Add(b.cfg.Leader.LockTTL + b.cfg.WeChat.Timeout)
	for _, it := range b.items {
		b.m.TokenRefresh.WithLabelValues(it.ns, it.appid, it.kind, metrics.ResultSuccess)
		b.m.TokenRefresh.WithLabelValues(it.ns, it.appid, it.kind, metrics.ResultError)
		b.m.RefreshDue.WithLabelValues(it.ns, it.appid, it.kind).Set(unixSeconds(first))
		if it.kind == KindAccessToken {
			b.m.ExternalInvalidation.WithLabelValues(it.ns, it.appid)
			for _, src := range []string{metrics.SourceClient, metrics.SourceCompat, metrics.SourceLogin, metrics.SourceProxy} {
				b.m.InvalidCredential.WithLabelValues(it.ns, it.appid, src)
			}
			b.m.ForcedRefreshUsed.WithLabelValues(it.ns, it.appid).Set(0)
		}
	}
}

// exportDeadline sets wxbroker_token_refresh_due_timestamp_seconds for r, the
// record just applied to it's cache. Every replica computes it from the
// record alone, so the value agrees across replicas and still moves into the
// past when there is no leader at all.
func (b *Broker) exportDeadline(it *item, r *record) {
	b.m.RefreshDue.WithLabelValues(it.ns, it.appid, it.kind).Set(unixSeconds(b.refreshDeadline(it, r)))
}

// refreshDeadline is the latest time the scheduler (dueFor) starts
// refreshing r when nothing fails: the end of the jitter range. Classic
// tokens: before_expiry of the lifetime left. Stable tokens: 80 % of the
// rotation window left plus the jitter (WeChat mints the successor only in
// the window). Tickets: half of before_expiry left, the longest a ticket
// waits for its token's refresh to bring a new one.
func (b *Broker) refreshDeadline(it *item, r *record) time.Time {
	life := r.ExpiresAt.Sub(r.FetchedAt)
	if life <= 0 {
		return r.ExpiresAt
	}
	before, _ := b.cfg.Refresh.Lead(life)
	if it.kind != KindAccessToken {
		return r.ExpiresAt.Add(-before / 2)
	}
	if lead, jitter, ok := b.cfg.Refresh.StableLead(life); ok && it.app.app.TokenMode != config.ModeClassic {
		return r.ExpiresAt.Add(-lead + jitter)
	}
	return r.ExpiresAt.Add(-before)
}

// markStopped exports that retries of it stopped after errcode code.
func (b *Broker) markStopped(it *item, code int) {
	b.clearStopped(it)
	b.m.RefreshStopped.WithLabelValues(it.ns, it.appid, it.kind, metrics.ErrcodeLabel(code)).Set(1)
}

// clearStopped removes it's retries-stopped series (a refresh succeeded).
func (b *Broker) clearStopped(it *item) {
	b.m.RefreshStopped.DeletePartialMatch(map[string]string{"wx_namespace": it.ns, "appid": it.appid, "kind": it.kind})
}

// resetLeaderMetrics clears what only a leader knows: today's call counts
// and the retries-stopped states. Called when a term ends; the next leader
// loads the day's counts from Redis.
func (b *Broker) resetLeaderMetrics() {
	b.m.RefreshStopped.Reset()
	b.resetDayMetrics()
}

// resetDayMetrics sets the per-day counts to zero (a new UTC+8 day, or no
// longer the leader).
func (b *Broker) resetDayMetrics() {
	b.m.WeChatQuotaUsed.Reset()
	for _, it := range b.items {
		if it.kind == KindAccessToken {
			b.m.ForcedRefreshUsed.WithLabelValues(it.ns, it.appid).Set(0)
		}
	}
}

// dayMetricsLoop resets the per-day counts at every UTC+8 midnight until ctx
// ends; a leader then reloads the new day's counts from Redis (in case a
// call was counted in between). It polls the (injectable) clock every tick.
func (b *Broker) dayMetricsLoop(ctx context.Context) {
	tk := time.NewTicker(b.tick)
	defer tk.Stop()
	today := day(b.now())
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		d := day(b.now())
		if d == today {
			continue
		}
		today = d
		b.resetDayMetrics()
		if t := b.term.Load(); t != nil && t.ctx.Err() == nil {
			b.loadQuotaGauges(t.ctx)
		}
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1e3 }
