package login

import (
	"net/http"
	"net/netip"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"golang.org/x/time/rate"

	"github.com/wxbroker/wxbroker/config"
)

// limiterIdle is how long a client IP's bucket is kept after its last request.
const limiterIdle = 3 * time.Minute

// ipExtractor names the client of a request: the TCP peer, unless the peer
// is one of login.trusted_proxies, in which case X-Forwarded-For is walked
// from the right past the trusted proxies. With no trusted proxy configured
// the header is ignored, so a client cannot pick its own rate-limit identity.
func ipExtractor(l *config.Login) echo.IPExtractor {
	nets := l.TrustedProxyNets()
	if len(nets) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range nets {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// clientKey is the rate-limit identity of a client IP: the address for IPv4,
// its /64 for IPv6 (one subscriber usually holds a whole /64, so limiting
// single addresses would let it rotate through 2^64 identities).
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// limit returns a per-client-IP token bucket middleware for one route (each
// route has its own buckets), or nil when perMinute is 0 (limit off). A
// refused request is counted for flow and answered by deny.
func (s *Server) limit(perMinute, burst int, flow string, deny func(c echo.Context) error) echo.MiddlewareFunc {
	if perMinute <= 0 {
		return nil
	}
	return middleware.RateLimiterWithConfig(middleware.RateLimiterConfig{
		Store: middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
			Rate: rate.Limit(float64(perMinute) / 60), Burst: burst, ExpiresIn: limiterIdle,
		}),
		IdentifierExtractor: func(c echo.Context) (string, error) { return clientKey(c.RealIP()), nil },
		DenyHandler: func(c echo.Context, _ string, _ error) error {
			s.count(flow, resultRateLimited)
			return deny(c)
		},
		ErrorHandler: func(c echo.Context, _ error) error { return deny(c) },
	})
}

// errRateLimited answers a JSON route's refused request.
var errRateLimited = &apiError{status: http.StatusTooManyRequests,
	message: "请求过于频繁，请稍后再试 / too many requests, try again in a minute"}

// jsonLimit is limit for the JSON routes, configured by login.rate_limit.
func (s *Server) jsonLimit(flow string) []echo.MiddlewareFunc {
	rl := s.cfg.Login.RateLimit
	m := s.limit(rl.PerMinute, rl.Burst, flow, func(echo.Context) error { return errRateLimited })
	if m == nil {
		return nil
	}
	return []echo.MiddlewareFunc{m}
}

// htmlLimit is limit for the website routes, answering with a page.
func (s *Server) htmlLimit(perMinute, burst int, flow string) []echo.MiddlewareFunc {
	m := s.limit(perMinute, burst, flow, func(c echo.Context) error {
		return htmlError(c, http.StatusTooManyRequests, "请求过于频繁", "Too many login attempts",
			"请稍等一分钟后再试。", "Wait a minute and try again.")
	})
	if m == nil {
		return nil
	}
	return []echo.MiddlewareFunc{m}
}
