package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/broker/api"
	"github.com/wxbroker/wxbroker/broker/login"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

const (
	serveSynopsis = "--config FILE [--log-level LEVEL]"
	serveSummary  = "run the broker: internal API, leader election, refresh, login endpoints, /metrics"
)

// shutdownTimeout bounds the graceful drain of the HTTP servers.
const shutdownTimeout = 10 * time.Second

func serveCommand() command {
	return command{synopsis: serveSynopsis, summary: serveSummary, run: runServe}
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := newFlagSet("serve", serveSynopsis, serveSummary, stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	level := fs.String("log-level", "", "log level (debug, info, warn, error); overrides log.level")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *path == "" || fs.NArg() != 0 {
		fs.Usage()
		return exitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "wxbroker serve: %v\n", err)
		return exitFailure
	}
	if *level != "" {
		cfg.Log.Level = *level
	}
	log, err := newLogger(cfg.Log, zapcore.Lock(zapcore.AddSync(stderr)))
	if err != nil {
		fmt.Fprintf(stderr, "wxbroker serve: %v\n", err)
		return exitUsage
	}
	defer func() { _ = log.Sync() }()
	// go-redis has only a process-wide logger, so the command sets it (never
	// a library): its unstructured "failed to dial" lines would otherwise
	// flood stderr during a Redis outage.
	redis.SetLogger(redisLogger{log.Named("redis")})

	rdb := newRedis(cfg.Redis)
	defer func() { _ = rdb.Close() }()
	log.Info("config loaded", zap.String("instance_id", cfg.InstanceID),
		zap.Int("namespaces", len(cfg.Namespaces)), zap.Int("apps", len(cfg.Apps())))
	for _, p := range config.FileModeProblems(*path, cfg) {
		log.Warn("secret readable by other users", zap.String("key", p.Key), zap.String("file", p.Value),
			zap.String("problem", p.Message), zap.String("fix", p.Fix))
	}
	// SIGHUP re-reads the file (reload.go); without this it would end the
	// process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	err = runSystem(ctx, system{Config: cfg, Redis: rdb, Logger: log, AuditWriter: stderr,
		ConfigPath: *path, Reloads: hup, AdjustConfig: func(c *config.Config) {
			if *level != "" {
				c.Log.Level = *level
			}
		}})
	if err != nil {
		log.Error("wxbroker stopped", zap.Error(err))
		return exitFailure
	}
	log.Info("wxbroker stopped")
	return exitOK
}

// newLogger builds the process logger from the log section.
func newLogger(c config.Log, ws zapcore.WriteSyncer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", c.Level)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch c.Format {
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, ws, lvl), zap.ErrorOutput(ws)), nil
}

// newRedis builds the client redis.addrs and redis.master_name select: one address is a single
// node, master_name selects Sentinel, several addresses select Cluster.
func newRedis(c config.Redis) redis.UniversalClient {
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:      c.Addrs,
		MasterName: c.MasterName,
		Username:   c.Username,
		Password:   c.Password.Reveal(),
		DB:         c.DB,
	})
}

// system is what serve and dev run: the same code path, with the process
// concerns (where the config, Redis and WeChat come from) decided by the caller.
type system struct {
	Config      *config.Config        // validated
	Redis       redis.UniversalClient // built from Config.Redis (serve) or miniredis (dev)
	Logger      *zap.Logger
	AuditWriter io.Writer // where the buffered audit log goes; nil: stderr
	// OnReady, if set, is called once the listeners are bound and the broker
	// serves valid tokens, with the bound addresses (public is nil without
	// login).
	OnReady func(internal, public net.Addr)
	// ReadyAll makes OnReady wait until every configured app has a valid
	// access token, not just one (dev: each printed curl line must work).
	ReadyAll bool
	// ConfigPath is the file Config came from; "": it reloads nothing.
	ConfigPath string
	// Reloads delivers SIGHUP: each one reloads ConfigPath.
	Reloads <-chan os.Signal
	// AdjustConfig applies the command line's overrides to a reloaded file.
	AdjustConfig func(cfg *config.Config)
}

// runSystem builds the broker, the internal API and, when configured, the
// login endpoints, and runs them until ctx is done or one of them fails. On
// the way out the HTTP servers drain (bounded by shutdownTimeout), the broker
// stops every refresh and releases the lock, and the audit log is flushed.
func runSystem(ctx context.Context, s system) error {
	cfg, log := s.Config, s.Logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	s.Redis.AddHook(m.Redis.Hook())
	if cfg.Gateway.Enabled {
		m.Gateway.Timeout.Set(cfg.Gateway.Timeout.Seconds())
	}

	wc, err := wechat.New(wechat.Options{
		BaseURL: cfg.WeChat.BaseURL, FallbackURLs: cfg.WeChat.FallbackURLs, Timeout: cfg.WeChat.Timeout,
	})
	if err != nil {
		return fmt.Errorf("wechat client: %w", err)
	}
	b, err := broker.New(broker.Options{
		Config: cfg, Redis: s.Redis, WeChat: wc, Logger: log.Named("broker"), Metrics: m,
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	rl := newReloader(s.ConfigPath, s.AdjustConfig, log.Named("reload"), m.Reload, b, cfg)
	a, err := api.New(api.Options{
		Tokens: b, Config: cfg, Logger: log.Named("api"), Metrics: m, Gatherer: reg, AuditWriter: s.AuditWriter,
		Admin: rl,
	})
	if err != nil {
		return fmt.Errorf("internal api: %w", err)
	}
	rl.targets = []reloadTarget{b, a}
	defer func() {
		if err := a.Close(); err != nil {
			log.Warn("flush audit log", zap.Error(err))
		}
	}()

	servers := []*listener{{name: "internal", srv: a.Server(cfg.Listen)}}
	if cfg.LoginEnabled() {
		ls, err := login.New(login.Options{
			Config: cfg, Redis: s.Redis, WeChat: wc, Tokens: b, Logger: log.Named("login"), Metrics: m,
		})
		if err != nil {
			return fmt.Errorf("login: %w", err)
		}
		srv := a.Server(cfg.PublicListen)
		srv.Handler = ls.Handler()
		srv.ErrorLog = zap.NewStdLog(log.Named("login.http"))
		servers = append(servers, &listener{name: "public", srv: srv})
	}
	for _, l := range servers {
		if err := l.listen(cfg.TLS); err != nil {
			for _, o := range servers {
				o.close()
			}
			return err
		}
		log.Info("listening", zap.String("listener", l.name), zap.Stringer("addr", l.ln.Addr()),
			zap.Bool("tls", cfg.TLS.CertFile != ""))
	}
	if tc := servers[0].srv.TLSConfig; tc != nil && len(tc.Certificates) > 0 && tc.Certificates[0].Leaf != nil {
		m.SetTLSCertificate(tc.Certificates[0].Leaf)
	}

	g, gctx := errgroup.WithContext(ctx)
	if s.Reloads != nil {
		g.Go(func() error {
			rl.onSignals(gctx, s.Reloads)
			return nil
		})
	}
	g.Go(func() error {
		if err := b.Run(gctx); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		return nil
	})
	for _, l := range servers {
		g.Go(func() error { return l.serve(cfg.TLS) })
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), shutdownTimeout)
			defer cancel()
			if err := l.srv.Shutdown(sctx); err != nil {
				return fmt.Errorf("shut down %s listener: %w", l.name, err)
			}
			return nil
		})
	}
	if s.OnReady != nil {
		g.Go(func() error {
			if waitReady(gctx, b, cfg, s.ReadyAll) {
				var public net.Addr
				if len(servers) > 1 {
					public = servers[1].ln.Addr()
				}
				s.OnReady(servers[0].ln.Addr(), public)
			}
			return nil
		})
	}
	log.Info("wxbroker started", zap.String("instance_id", cfg.InstanceID))
	err = g.Wait()
	log.Info("shutting down")
	return err
}

// waitReady polls b.Ready (with all, every app of cfg having a token) until
// it holds or ctx ends.
func waitReady(ctx context.Context, b *broker.Broker, cfg *config.Config, all bool) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	ready := func() bool {
		if b.Ready() != nil {
			return false
		}
		if !all {
			return true
		}
		for ns, n := range cfg.Namespaces {
			if n == nil {
				continue
			}
			for _, a := range n.Apps {
				if a == nil {
					continue
				}
				if _, err := b.AccessToken(ns, a.AppID); err != nil {
					return false
				}
			}
		}
		return true
	}
	for !ready() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// listener is one HTTP server and its socket.
type listener struct {
	name string
	srv  *http.Server
	ln   net.Listener
}

// listen binds the socket first, so that a taken port fails start-up before
// anything runs.
func (l *listener) listen(t config.TLS) error {
	ln, err := net.Listen("tcp", l.srv.Addr)
	if err != nil {
		return fmt.Errorf("%s listener: %w", l.name, err)
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("%s listener: load TLS key pair: %w", l.name, err)
		}
		l.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	l.ln = ln
	return nil
}

func (l *listener) serve(t config.TLS) error {
	var err error
	if t.CertFile != "" {
		err = l.srv.ServeTLS(l.ln, "", "")
	} else {
		err = l.srv.Serve(l.ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s listener: %w", l.name, err)
}

func (l *listener) close() {
	if l.ln != nil {
		_ = l.ln.Close()
	}
}

// redisLogger routes go-redis's own messages (a dial failure on every retry
// while Redis is down) into the structured log at debug level: the broker
// already reports the outage once, at warn level, with what it means.
type redisLogger struct{ log *zap.Logger }

// Printf implements go-redis's internal.Logging.
func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}
