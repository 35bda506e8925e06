package api

import (
	"net/http"
	"sync/atomic"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// notReadyReason is what /readyz answers when not ready. The cause (a Redis
// error with addresses, say) is logged, not answered: /readyz is reachable
// without a key.
const notReadyReason = "no valid access token can be served; see the broker's log and /v1/status"

// probes are the routes without a key: /healthz, /readyz and /metrics.
type probes struct {
	ready    func() error        // TokenSource.Ready
	gatherer prometheus.Gatherer // nil: no /metrics route
	log      *zap.Logger
	// lastNotReady is the last /readyz failure logged.
	lastNotReady atomic.Pointer[string]
}

// routes registers the group's routes.
func (p *probes) routes(add addFunc) {
	add(http.MethodGet, "/healthz", p.healthz)
	add(http.MethodGet, "/readyz", p.readyz)
	if p.gatherer != nil {
		add(http.MethodGet, "/metrics", echo.WrapHandler(promhttp.HandlerFor(p.gatherer, promhttp.HandlerOpts{
			ErrorLog: zap.NewStdLog(p.log.Named("metrics")),
		})))
	}
}

func (p *probes) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (p *probes) readyz(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	if err := p.ready(); err != nil {
		p.notReady(err)
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": notReadyReason})
	}
	if p.lastNotReady.Load() != nil {
		p.lastNotReady.Store(nil) // log the next failure again, even with the same cause
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// notReady logs why /readyz fails, once per change of cause: probes poll it
// every few seconds.
func (p *probes) notReady(err error) {
	msg := err.Error()
	if last := p.lastNotReady.Load(); last != nil && *last == msg {
		return
	}
	p.lastNotReady.Store(&msg)
	p.log.Warn("not ready", zap.Error(err))
}
