package wechattest

import (
	"net/netip"
	"time"
)

// unlimited is the daily limit reported for APIs without a quota.
const unlimited = 100_000_000

// clearQuotaMonthly is how many clear_quota calls WeChat allows per month.
const clearQuotaMonthly = 10

// app is one registered AppID.
type app struct {
	id        string
	secret    string
	allowed   []netip.Prefix  // empty: every IP may call
	limits    map[string]int  // per-API daily quota overrides
	used      map[string]int  // calls per API in the current UTC+8 day
	day       string          // UTC+8 day of used and forces
	forces    int             // forced stable refreshes in day
	lastForce time.Time       // last forced stable refresh that minted
	clears    int             // clear_quota calls in month
	month     string          // UTC+8 month of clears
	chains    map[kind]*chain // current and previous token of each kind
}

// chain is the token history of one kind for one app.
type chain struct {
	current  *token
	previous *token
}

// AddApp registers an app (or replaces its secret). Until an app is added,
// calls naming its appid answer 40013; a wrong secret answers 40125. Any app
// may also act as a component (third-party platform) app or as an
// authorizer app.
func (s *Sim) AddApp(appID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok {
		a.secret = secret
		return
	}
	s.apps[appID] = &app{
		id:     appID,
		secret: secret,
		limits: make(map[string]int),
		used:   make(map[string]int),
		chains: make(map[kind]*chain),
	}
}

// SetAllowedIPs sets the IP allow-list of an added app: when it is not empty,
// calls that carry the AppSecret from any other IP (the host of
// r.RemoteAddr) answer 40164 (61004 for component tokens). Entries are IP
// addresses or CIDR prefixes; invalid entries are ignored. No arguments
// clear the list. Unknown apps are ignored.
func (s *Sim) SetAllowedIPs(appID string, ips ...string) {
	var allowed []netip.Prefix
	for _, v := range ips {
		if p, err := netip.ParsePrefix(v); err == nil {
			allowed = append(allowed, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(v); err == nil {
			ip = ip.Unmap()
			allowed = append(allowed, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok {
		a.allowed = allowed
	}
}

// SetQuota sets the daily quota of one API (an API name such as
// "stable_token" or "generic") for an added app, overriding
// Options.DailyQuota. APIs other than the credential ones have no quota
// unless set here. Unknown apps are ignored.
func (s *Sim) SetQuota(appID string, api string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok {
		a.limits[api] = n
	}
}

// limit returns the daily quota of an API and whether it has one.
func (s *Sim) limit(a *app, api string) (int, bool) {
	if n, ok := a.limits[api]; ok {
		return n, true
	}
	switch api {
	case apiToken, apiStableToken, apiGetTicket, apiComponentToken, apiAuthorizerToken:
		return s.opts.DailyQuota, true
	}
	return unlimited, false
}

// utc8 returns t in WeChat's quota time zone (UTC+8), as a UTC-based time.
func utc8(t time.Time) time.Time { return t.UTC().Add(8 * time.Hour) }

// roll resets the daily counters of an app when the UTC+8 day has changed.
func (s *Sim) roll(a *app) {
	now := utc8(s.now())
	if day := now.Format(time.DateOnly); day != a.day {
		a.day = day
		a.used = make(map[string]int)
		a.forces = 0
	}
	if month := now.Format("2006-01"); month != a.month {
		a.month = month
		a.clears = 0
	}
}

// takeQuota counts a call against the app's daily quota of api, or answers
// 45009 when the quota is used up. Callers hold s.mu.
func (s *Sim) takeQuota(c *call, a *app, api string) []byte {
	s.roll(a)
	if n, ok := s.limit(a, api); ok && a.used[api] >= n {
		return s.errBody(c, 45009, "")
	}
	a.used[api]++
	return nil
}

// ipAllowed reports whether the caller's IP may use the app's secret.
func (a *app) ipAllowed(c *call) bool {
	if len(a.allowed) == 0 {
		return true
	}
	for _, p := range a.allowed {
		if p.Contains(c.ip) {
			return true
		}
	}
	return false
}

// checkSecret authenticates a call that carries an AppSecret: 41002/41004
// when missing, 40013 for an unknown appid, 40125 for a wrong secret, and
// ipErr (40164 or 61004) for a caller outside the allow-list. Callers hold
// s.mu.
func (s *Sim) checkSecret(c *call, appID, secret string, ipErr int) (*app, []byte) {
	switch {
	case appID == "":
		return nil, s.errBody(c, 41002, "")
	case secret == "":
		return nil, s.errBody(c, 41004, "")
	}
	a, ok := s.apps[appID]
	if !ok {
		return nil, s.errBody(c, 40013, "")
	}
	if secret != a.secret {
		return nil, s.errBody(c, 40125, "")
	}
	if !a.ipAllowed(c) {
		if ipErr == 40164 {
			ip := c.ip.String()
			return nil, s.errBody(c, 40164, "invalid ip "+ip+" ipv6 ::ffff:"+ip+", not in whitelist")
		}
		return nil, s.errBody(c, ipErr, "")
	}
	return a, nil
}

// clearQuota serves POST /cgi-bin/clear_quota/v2: appid and appsecret in the
// query (what SDKs send), a form or a JSON body. It resets the app's daily
// counters, forced refreshes included; 48006 after 10 clears in a month.
func (s *Sim) clearQuota(c *call) []byte {
	appID, secret := c.q("appid"), c.q("appsecret")
	if appID == "" {
		appID = c.field("appid")
	}
	if secret == "" {
		secret = c.field("appsecret")
	}
	if !c.jsonOK && (appID == "" || secret == "") {
		if v, err := parseForm(c.body); err == nil {
			if appID == "" {
				appID = v.Get("appid")
			}
			if secret == "" {
				secret = v.Get("appsecret")
			}
		}
	}
	a, fail := s.checkSecret(c, appID, secret, 40164)
	if fail != nil {
		return fail
	}
	s.roll(a)
	if a.clears >= clearQuotaMonthly {
		return s.errBody(c, 48006, "")
	}
	a.clears++
	a.used = make(map[string]int)
	a.forces = 0
	return okBody()
}
