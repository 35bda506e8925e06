package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
)

// ErrNotStopped is returned by Resume for a credential whose retries have
// not stopped.
var ErrNotStopped = errors.New("broker: refresh of this app has not stopped")

// PrepareReload checks cfg, a configuration that passed config.Validate
// and config.ReloadProblems against the running one, and returns the
// function that makes its namespaces and apps the broker's set of
// credentials. Nothing changes until commit is called; an error means cfg
// cannot be applied and leaves everything as it was. commit:
//
//   - adds the new apps: every replica loads their records from Redis at
//     once, and the leader's scheduler takes them on at its next tick (a
//     credential Redis does not hold is fetched then);
//   - removes the apps no longer configured: they are neither refreshed nor
//     served from then on, their metric series are deleted, and their
//     records stay in Redis (docs/OPERATIONS.md says how to delete them);
//   - keeps every other credential, its cache and its schedule; a changed
//     secret is used from the next call, and a credential whose retries
//     stopped (40125, 40164, ...) is tried again at once.
//
// Reloads are not meant to run concurrently: the caller serialises them.
func (b *Broker) PrepareReload(cfg *config.Config) (commit func(), err error) {
	if cfg == nil {
		return nil, errors.New("broker: PrepareReload needs a configuration")
	}
	prev := b.catalog()
	next, err := newCatalog(cfg, prev)
	if err != nil {
		return nil, err
	}
	return func() { b.commitCatalog(prev, next) }, nil
}

// commitCatalog swaps next in for prev (see PrepareReload).
func (b *Broker) commitCatalog(prev, next *catalog) {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	if cur := b.catalog(); cur != prev {
		// Another reload committed since prepare: rebuild on top of it
		// (cfg was valid then and still is).
		rebuilt, err := newCatalog(next.cfg, cur)
		if err != nil {
			b.log.Error("reload: cannot rebuild the catalog; keeping the running one", zapErr(err))
			return
		}
		prev, next = cur, rebuilt
	}
	next.adopt()
	b.cat.Store(next)
	b.store.setNamespaces(next.namespaces)

	var added, removed []*item
	for _, it := range next.items {
		if !prev.has(it) {
			added = append(added, it)
		}
	}
	for _, it := range prev.items {
		if !next.has(it) {
			removed = append(removed, it)
		}
	}
	b.ex.seedMetrics(b.now(), added)
	for _, it := range removed {
		b.ex.dropMetrics(it)
	}
	for _, it := range added {
		b.log.Info("credential added by reload", itemFields(it)...)
	}
	for _, it := range removed {
		b.log.Info("credential removed by reload: no longer refreshed or served; its redis record is left in place", itemFields(it)...)
	}
	// New credentials start from what Redis holds: the leader may have
	// stored them before this replica reloaded.
	if len(added) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.WeChat.Timeout)
		if err := b.rep.reconcile(ctx); err != nil {
			b.log.Warn("reload: cannot load the new credentials from redis yet; the next reconcile will", zapErr(err))
		}
		cancel()
	}
	b.op.reloaded(prev, next)
	if t := b.el.term.Load(); t != nil {
		t.sched().wake() // the schedule follows the catalog at its next tick
	}
	b.log.Info("credentials reloaded", zap.Int("items", len(next.items)),
		zap.Int("added", len(added)), zap.Int("removed", len(removed)))
}

// Resume makes the refresh of an app whose retries stopped (an errcode
// retrying cannot fix: 40013, 40125, 40164, ...) try again at once, on the
// leader. On another replica it asks the leader through Redis. It returns
// ErrUnknownApp for an app that is not configured, ErrNotStopped when this
// replica leads and no credential of the app has stopped, or the error of
// publishing the request.
func (b *Broker) Resume(ctx context.Context, ns, appid string) error {
	e, ok := b.entry(ns, appid)
	if !ok {
		return ErrUnknownApp
	}
	if t := b.el.term.Load(); t != nil && t.ctx.Err() == nil {
		if !b.resumeLocal(t, e) {
			return ErrNotStopped
		}
		return nil
	}
	if err := b.store.publish(ctx, chanResume, ns+"\t"+appid); err != nil {
		return fmt.Errorf("ask the leader to resume appid %q: %w", appid, err)
	}
	return nil
}

// resumeLocal resumes e's stopped credentials under term t.
func (b *Broker) resumeLocal(t *term, e *appEntry) bool {
	resumed := false
	for _, it := range append([]*item{e.token}, ticketsOf(e)...) {
		if t.sched().resume(it) {
			b.log.Info("refresh resumed", itemFields(it)...)
			resumed = true
		}
	}
	return resumed
}

// handleResume serves a resume request published by another replica.
func (b *Broker) handleResume(payload string) {
	t := b.el.term.Load()
	if t == nil || t.ctx.Err() != nil {
		return
	}
	ns, appid, _ := strings.Cut(payload, "\t")
	if e, ok := b.entry(ns, appid); ok {
		b.resumeLocal(t, e)
	}
}

func ticketsOf(e *appEntry) []*item {
	out := make([]*item, 0, len(e.tickets))
	for _, it := range e.tickets {
		out = append(out, it)
	}
	return out
}
