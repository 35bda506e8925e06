package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Defaults of the security settings.
const (
	// DefaultRefreshReuseWindow is login.jwt.refresh_reuse_window.
	DefaultRefreshReuseWindow = 2 * time.Second
	// DefaultAccessRefreshLeeway is login.jwt.access_refresh_leeway.
	DefaultAccessRefreshLeeway = 5 * time.Minute
	// DefaultLoginPerMinute is login.rate_limit.per_minute.
	DefaultLoginPerMinute = 60
	// DefaultLoginBurst is login.rate_limit.burst.
	DefaultLoginBurst = 20
	// DefaultInvalidatePerMinute is clients[].invalidate_per_minute.
	DefaultInvalidatePerMinute = 60
)

// MayInvalidate reports whether the client may report failed tokens on the
// invalidate route (clients[].invalidate, default true).
func (cl *Client) MayInvalidate() bool { return cl.Invalidate == nil || *cl.Invalidate }

// InvalidateRate returns the client's report limit per minute
// (clients[].invalidate_per_minute, default DefaultInvalidatePerMinute).
func (cl *Client) InvalidateRate() int {
	if cl.InvalidatePerMinute <= 0 {
		return DefaultInvalidatePerMinute
	}
	return cl.InvalidatePerMinute
}

// TrustedProxyPrefixes parses login.trusted_proxies (validated: CIDRs or
// single IPs) into prefixes; entries that do not parse are skipped.
func (l *Login) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range l.TrustedProxies {
		if p, err := parseProxy(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// TrustedProxyNets is TrustedProxyPrefixes as *net.IPNet, for libraries that
// take those.
func (l *Login) TrustedProxyNets() []*net.IPNet {
	var out []*net.IPNet
	for _, p := range l.TrustedProxyPrefixes() {
		_, n, err := net.ParseCIDR(p.String())
		if err == nil {
			out = append(out, n)
		}
	}
	return out
}

func parseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// security validates the settings of this file.
func (v *validator) security(c *Config) {
	l := &c.Login
	for i, s := range l.TrustedProxies {
		p, err := parseProxy(s)
		key := fmt.Sprintf("login.trusted_proxies[%d]", i)
		switch {
		case err != nil:
			v.add(key, s, "is not a CIDR or an IP address", `write e.g. "10.0.0.0/8" or "192.0.2.10"`)
		case p.Bits() == 0:
			v.add(key, s, "trusts every address, so any client could choose its own IP with X-Forwarded-For",
				"list only the addresses of your reverse proxies or load balancers")
		}
	}
	if l.RateLimit.PerMinute < 0 {
		v.add("login.rate_limit.per_minute", fmt.Sprint(l.RateLimit.PerMinute), "is negative",
			"leave it out (default 60), or 0 to turn the per-IP limit off")
	}
	if l.RateLimit.PerMinute > 0 && l.RateLimit.Burst < 1 {
		v.add("login.rate_limit.burst", fmt.Sprint(l.RateLimit.Burst), "must be at least 1",
			"leave it out (default 20) or set a positive number")
	}
	if l.JWT.RefreshReuseWindow < 0 || l.JWT.RefreshReuseWindow > time.Minute {
		v.add("login.jwt.refresh_reuse_window", l.JWT.RefreshReuseWindow.String(), "must be between 0s and 1m",
			"leave it out (default 2s): long enough for a client to retry a lost answer, no longer")
	}
	if l.JWT.AccessRefreshLeeway < 0 || (l.JWT.RefreshTTL > 0 && l.JWT.AccessRefreshLeeway >= l.JWT.RefreshTTL) {
		v.add("login.jwt.access_refresh_leeway", l.JWT.AccessRefreshLeeway.String(),
			"must be 0 or positive and shorter than login.jwt.refresh_ttl",
			"leave it out (default 5m): an expired access token must not work as a long-lived refresh credential")
	}
	for i := range c.Clients {
		if n := c.Clients[i].InvalidatePerMinute; n < 0 {
			v.add(fmt.Sprintf("clients[%d].invalidate_per_minute", i), fmt.Sprint(n), "is negative",
				"leave it out (default 60) or set a positive number")
		}
	}
}

// RedactURL returns raw for printing a configured URL: a userinfo password
// (url.URL.Redacted), every query value (the names are kept) and the
// fragment are masked, since
// any of them may carry a credential (a proxy's API key). A value with an
// "@" that does not parse as userinfo (a malformed URL) has everything before
// its last "@" masked, and a malformed URL everything after a "?" or "#".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return redactMalformedURL(raw)
	}
	out := *u
	if out.RawQuery != "" {
		parts := strings.Split(out.RawQuery, "&")
		for i, p := range parts {
			if k, _, ok := strings.Cut(p, "="); ok {
				parts[i] = k + "=xxxxx"
			} else if p != "" {
				parts[i] = "xxxxx" // a bare value
			}
		}
		out.RawQuery = strings.Join(parts, "&")
	}
	if out.Fragment != "" || out.RawFragment != "" {
		out.Fragment, out.RawFragment = "xxxxx", ""
	}
	if out.User == nil && strings.Contains(raw, "@") {
		return redactMalformedURL(raw)
	}
	return out.Redacted()
}

// redactMalformedURL masks what precedes the last "@" and what follows a
// "?" or "#" of a value that does not parse as a URL.
func redactMalformedURL(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i+1] + "xxxxx"
	}
	i := strings.LastIndexByte(raw, '@')
	if i < 0 {
		return raw
	}
	prefix := ""
	if j := strings.Index(raw, "://"); j >= 0 && j < i {
		prefix = raw[:j+3]
	}
	return prefix + "xxxxx" + raw[i:]
}

// redactAddr masks what precedes an "@" in a host:port value (a password
// pasted into redis.addrs).
func redactAddr(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return "xxxxx" + addr[i:]
	}
	return addr
}
