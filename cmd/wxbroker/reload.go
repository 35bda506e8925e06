package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/broker/api"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// errNoConfigFile is Reload's answer in a process whose configuration does
// not come from a file (wxbroker dev).
var errNoConfigFile = fmt.Errorf("%w (wxbroker dev builds its configuration)", api.ErrNoConfigFile)

// reloadTarget is a component that takes a new configuration in two steps:
// prepare (may refuse, changes nothing) and commit.
type reloadTarget interface {
	PrepareReload(cfg *config.Config) (commit func(), err error)
}

// reloader owns the configuration file of a running process. Reload reads
// and validates the whole file; only a valid one that changes nothing a
// restart must is handed to the broker and the API, both prepared before
// either commits. SIGHUP and POST /v1/admin/reload both call it; every
// replica reloads on its own signal. It is safe for concurrent use
// (reloads are serialised).
type reloader struct {
	path    string                   // "": nothing to reload
	adjust  func(cfg *config.Config) // applies the command line's overrides (--log-level)
	log     *zap.Logger
	m       metrics.Reload
	broker  *broker.Broker
	targets []reloadTarget // the broker first: an app exists before clients may name it

	mu  sync.Mutex
	cur *config.Config
}

// newReloader returns the reloader of cfg, the configuration in use, read
// from path ("" when it comes from no file), and records cfg's hash
// (wxbroker_config_hash).
func newReloader(path string, adjust func(*config.Config), log *zap.Logger, m metrics.Reload, b *broker.Broker, cfg *config.Config) *reloader {
	m.InUse(cfg.Hash())
	return &reloader{path: path, adjust: adjust, log: log, m: m, broker: b, cur: cfg}
}

// Reload re-reads the configuration file and applies it. A file that does
// not load or validate, or that changes a key a restart must (listen,
// redis, ...), changes nothing: the error lists every problem, the failure
// is logged with each of them and counted in
// wxbroker_config_reload_total{result="failure"}. A successful one sets
// wxbroker_config_hash to the new configuration's hash.
func (r *reloader) Reload(ctx context.Context) error {
	if r.path == "" {
		return errNoConfigFile
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.reload(ctx)
	if err != nil {
		r.m.Failed()
		fields := []zap.Field{zap.String("file", r.path)}
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			problems := make([]string, len(ve.Problems))
			for i, p := range ve.Problems {
				problems[i] = p.String()
			}
			fields = append(fields, zap.Strings("problems", problems))
		} else {
			fields = append(fields, zap.Error(err))
		}
		r.log.Error("configuration reload failed; the running configuration is unchanged", fields...)
		return err
	}
	r.m.Succeeded(time.Now())
	r.m.InUse(r.cur.Hash())
	return nil
}

func (r *reloader) reload(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	next, err := config.Load(r.path)
	if err != nil {
		return err
	}
	if r.adjust != nil {
		r.adjust(next)
	}
	if problems := config.ReloadProblems(r.cur, next); len(problems) > 0 {
		return fmt.Errorf("config: %s: %w", r.path, &config.ValidationError{Problems: problems})
	}
	commits := make([]func(), 0, len(r.targets))
	for _, t := range r.targets {
		commit, err := t.PrepareReload(next)
		if err != nil {
			return fmt.Errorf("apply %s: %w", r.path, err)
		}
		commits = append(commits, commit)
	}
	for _, commit := range commits {
		commit()
	}
	if config.LoginSecretChanged(r.cur, next) {
		r.log.Warn("the secret of an app the login endpoints use changed: token refresh uses it now, the login endpoints after a restart",
			zap.String("file", r.path))
	}
	for _, p := range config.FileModeProblems(r.path, next) {
		r.log.Warn("secret readable by other users", zap.String("key", p.Key), zap.String("file", p.Value),
			zap.String("problem", p.Message), zap.String("fix", p.Fix))
	}
	r.cur = next
	r.log.Info("configuration reloaded", zap.String("file", r.path),
		zap.Int("namespaces", len(next.Namespaces)), zap.Int("apps", len(next.Apps())), zap.Int("clients", len(next.Clients)))
	return nil
}

// Resume asks the leader to retry a refresh whose retries stopped.
func (r *reloader) Resume(ctx context.Context, ns, appid string) error {
	if err := r.broker.Resume(ctx, ns, appid); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}

// onSignals reloads on every value from sigs until ctx ends.
func (r *reloader) onSignals(ctx context.Context, sigs <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
			if r.path == "" {
				r.log.Warn("SIGHUP ignored: this process has no configuration file to reload (wxbroker dev generates its configuration)")
				continue
			}
			r.log.Info("SIGHUP received; reloading the configuration", zap.String("file", r.path))
			_ = r.Reload(ctx) // logged and counted by Reload
		}
	}
}
