package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	Key     string // key path, e.g. "namespaces.prod.apps[1].appid"
	Line    int    // line in the YAML file when known, else 0
	Value   string // the offending value, secrets masked; empty when there is none
	Message string // what is wrong
	Fix     string // what to do about it
}

// String formats the problem on one line:
// key (line N) = "value": message; fix: fix.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Key)
	if p.Key == "" {
		b.WriteString("(top level)")
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", p.Line)
	}
	if p.Value != "" {
		fmt.Fprintf(&b, " = %q", p.Value)
	}
	b.WriteString(": ")
	b.WriteString(p.Message)
	if p.Fix != "" {
		b.WriteString("; fix: ")
		b.WriteString(p.Fix)
	}
	return b.String()
}

// ValidationError lists every problem found in a configuration. Load
// and Validate return it (Load wraps it: use errors.As).
type ValidationError struct {
	Problems []Problem
}

// Error prints a summary line and then one problem per line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	n := len(e.Problems)
	if n == 1 {
		b.WriteString("invalid configuration (1 problem):")
	} else {
		fmt.Fprintf(&b, "invalid configuration (%d problems):", n)
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

var (
	appIDPattern     = regexp.MustCompile(`^wx[0-9a-f]{16}$`)
	sha256Pattern    = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	namespacePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
)

// classicLifetime is WeChat's access token lifetime; before_expiry must fit in it.
const classicLifetime = 7200 * time.Second

type validator struct{ problems []Problem }

func (v *validator) add(key, value, msg, fix string) {
	v.problems = append(v.problems, Problem{Key: key, Value: value, Message: msg, Fix: fix})
}

// Validate checks the whole configuration and returns a *ValidationError
// listing every problem, or nil. It does not read files or the network and
// does not modify c. Secrets are checked for presence (a value, or a *_file
// that Load has read) and never shown.
func (c *Config) Validate() error {
	v := &validator{}
	v.process(c)
	v.redis(&c.Redis)
	v.durations(c)
	v.refresh(&c.Refresh)
	v.namespaces(c)
	v.clients(c)
	v.login(c)
	v.security(c)
	v.gateway(&c.Gateway, c.WeChat.Timeout)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

func (v *validator) hostPort(key, addr string, required bool) {
	if addr == "" {
		if required {
			v.add(key, "", "is empty", `set a host:port such as "127.0.0.1:8080"`)
		}
		return
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		v.add(key, redactAddr(addr), "is not a host:port address", `write it as host:port, e.g. "127.0.0.1:8080" or ":8080"`)
	}
}

func (v *validator) absURL(key, raw string, fix string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(key, RedactURL(raw), "is not an absolute http(s) URL", fix)
	}
}

// baseURL checks a WeChat base URL: absolute http(s) and, as wechat.New
// requires (serve refuses it otherwise), without a query or fragment; the
// broker appends each API's own path and query.
func (v *validator) baseURL(key, raw string, fix string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		v.add(key, RedactURL(raw), "is not an absolute http(s) URL", fix)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		v.add(key, RedactURL(raw), "must not carry a query string or fragment",
			"remove them: wxbroker appends each API's path and query (a path prefix is allowed); give a proxy its credentials in the URL's userinfo or in HTTPS_PROXY")
	}
}

func (v *validator) process(c *Config) {
	if c.InstanceID == "" {
		v.add("instance_id", "", "is empty", "leave it out to use hostname-pid, or set a unique name per replica")
	}
	v.hostPort("listen", c.Listen, true)
	v.hostPort("public_listen", c.PublicListen, false)
	if c.PublicListen != "" && c.PublicListen == c.Listen {
		v.add("public_listen", c.PublicListen, "is the same address as listen",
			"give the public endpoints (login, the components' event URLs) their own port: the internal API must not be exposed publicly")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		key, val := "tls.key_file", c.TLS.KeyFile
		if c.TLS.CertFile == "" {
			key, val = "tls.cert_file", c.TLS.CertFile
		}
		v.add(key, val, "is empty while the other TLS file is set", "set both tls.cert_file and tls.key_file, or neither")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", c.Log.Level, "is not a log level", "use one of debug, info, warn, error")
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		v.add("log.format", c.Log.Format, "is not a log format", "use json or console")
	}
}

func (v *validator) redis(r *Redis) {
	if len(r.Addrs) == 0 {
		v.add("redis.addrs", "", "is empty",
			`list at least one Redis address, e.g. ["127.0.0.1:6379"] (several: Cluster; with master_name: Sentinel)`)
	}
	for i, a := range r.Addrs {
		v.hostPort(fmt.Sprintf("redis.addrs[%d]", i), a, true)
	}
	if r.DB < 0 {
		v.add("redis.db", fmt.Sprint(r.DB), "is negative", "use 0 or a positive database number")
	}
	if len(r.Addrs) > 1 && r.MasterName == "" && r.DB != 0 {
		v.add("redis.db", fmt.Sprint(r.DB), "is not 0 but several addrs without master_name select Redis Cluster, which only has db 0",
			"set db: 0, or set master_name to use Sentinel")
	}
	if r.KeyPrefix == "" {
		v.add("redis.key_prefix", "", "is empty", `leave it out (default "wxbroker") or set a prefix`)
	} else if strings.ContainsAny(r.KeyPrefix, "{} \t\r\n") {
		v.add("redis.key_prefix", r.KeyPrefix, "contains braces or white space",
			"use letters, digits, : - _ . only: wxbroker adds its own Cluster hash tag")
	}
}

func (v *validator) positive(key string, d time.Duration) bool {
	if d <= 0 {
		v.add(key, d.String(), "must be a positive duration", "write a Go duration such as 15s, 5m or 2h")
		return false
	}
	return true
}

func (v *validator) durations(c *Config) {
	ttlOK := v.positive("leader.lock_ttl", c.Leader.LockTTL)
	renewOK := v.positive("leader.renew_interval", c.Leader.RenewInterval)
	if ttlOK && renewOK && c.Leader.RenewInterval >= c.Leader.LockTTL/2 {
		v.add("leader.renew_interval", c.Leader.RenewInterval.String(),
			fmt.Sprintf("must be less than half of leader.lock_ttl (%s), so one missed renewal does not lose the lock", c.Leader.LockTTL),
			fmt.Sprintf("set renew_interval below %s (e.g. a third of lock_ttl) or raise lock_ttl", c.Leader.LockTTL/2))
	}
	v.baseURL("wechat.base_url", c.WeChat.BaseURL, `use "https://api.weixin.qq.com" (a path prefix is allowed)`)
	for i, u := range c.WeChat.FallbackURLs {
		v.baseURL(fmt.Sprintf("wechat.fallback_urls[%d]", i), u, `use e.g. "https://api2.weixin.qq.com"`)
	}
	if v.positive("wechat.timeout", c.WeChat.Timeout) && ttlOK && renewOK &&
		c.Leader.RenewInterval < c.Leader.LockTTL/2 && c.WeChat.Timeout >= c.Leader.LockTTL-c.Leader.RenewInterval {
		v.add("wechat.timeout", c.WeChat.Timeout.String(),
			fmt.Sprintf("must be less than leader.lock_ttl - leader.renew_interval (%s): the leader only calls WeChat when its lease outlasts the call",
				c.Leader.LockTTL-c.Leader.RenewInterval),
			"lower wechat.timeout (default 5s) or raise leader.lock_ttl")
	}
}

func (v *validator) portion(key string, p Portion, max time.Duration) {
	switch {
	case p.Duration < 0 || (p.Duration == 0 && p.Fraction == 0):
		v.add(key, p.String(), "must be a share of the lifetime between 0% and 100% or a positive duration",
			`write e.g. "25%" or "30m"`)
	case p.Duration > 0 && p.Duration >= max:
		v.add(key, p.String(), fmt.Sprintf("must be shorter than the token lifetime (%s)", max), `write e.g. "25%" or "30m"`)
	case p.Duration == 0 && (p.Fraction <= 0 || p.Fraction >= 1):
		v.add(key, p.String(), "must be a share strictly between 0% and 100%", `write e.g. "25%" or "10%"`)
	}
}

func (v *validator) refresh(r *Refresh) {
	v.portion("refresh.before_expiry", r.BeforeExpiry, classicLifetime)
	v.portion("refresh.jitter", r.Jitter, classicLifetime)
	if r.Concurrency < 1 {
		v.add("refresh.concurrency", fmt.Sprint(r.Concurrency), "must be at least 1", "leave it out (default 32) or set a positive number")
	}
	v.positive("refresh.force_min_interval", r.ForceMinInterval)
	if r.ForceDailyCap < 1 {
		v.add("refresh.force_daily_cap", fmt.Sprint(r.ForceDailyCap), "must be at least 1",
			"leave it out (default 20, WeChat's own daily limit for forced stable refreshes)")
	}
	if v.positive("refresh.stable_rotation_window", r.StableRotationWindow) && r.StableRotationWindow >= classicLifetime {
		v.add("refresh.stable_rotation_window", r.StableRotationWindow.String(),
			fmt.Sprintf("must be shorter than the token lifetime (%s)", classicLifetime), "leave it out (default 5m, WeChat's rotation window)")
	}
}

func (v *validator) namespaces(c *Config) {
	if len(c.Namespaces) == 0 {
		v.add("namespaces", "", "no namespace is configured",
			"add at least one namespace with its apps, e.g. namespaces: {prod: {apps: [{appid: wx..., secret: ${WX_SECRET}, kind: miniprogram}]}}")
		return
	}
	seen := map[string]string{} // appid → key of its first occurrence
	for _, name := range c.NamespaceNames() {
		ns := c.Namespaces[name]
		key := "namespaces." + name
		if !namespacePattern.MatchString(name) {
			v.add(key, "", "is not a valid namespace name",
				"use letters, digits, _ . - (it appears in URLs, Redis keys and metric labels), e.g. prod or staging")
		}
		if ns == nil || len(ns.Apps) == 0 && len(ns.Components) == 0 {
			v.add(key+".apps", "", "namespace has no apps", "add its apps (or Open Platform components) or remove the namespace")
			continue
		}
		for i, a := range ns.Apps {
			v.app(fmt.Sprintf("%s.apps[%d]", key, i), a, seen)
		}
	}
	v.components(c, seen)
}

func (v *validator) app(key string, a *App, seen map[string]string) {
	if a == nil {
		v.add(key, "", "is empty", "give the app an appid, a secret and a kind, or remove the entry")
		return
	}
	switch {
	case a.AppID == "":
		v.add(key+".appid", "", "is empty", "copy the AppID (wx...) from the WeChat admin console")
	case !appIDPattern.MatchString(a.AppID):
		v.add(key+".appid", a.AppID, `must be "wx" followed by 16 lowercase hex digits`,
			"copy the AppID from the WeChat admin console (开发管理 → 开发设置)")
	case seen[a.AppID] != "":
		first := seen[a.AppID]
		if namespaceOf(first) == namespaceOf(key) {
			v.add(key+".appid", a.AppID, "is configured twice in namespace "+namespaceOf(key)+" (first at "+first+")",
				"remove one of the entries")
		} else {
			v.add(key+".appid", a.AppID, "is also configured in namespace "+namespaceOf(first)+
				": one AppID has one valid token at a time, so two namespaces would invalidate each other's tokens (errcode 40001)",
				"configure the AppID in one namespace and let clients of the other read it through an allow pattern")
		}
	default:
		seen[a.AppID] = key
	}
	if a.Secret == "" && a.SecretFile == "" {
		v.add(key+".secret", "", "is empty",
			"set secret (e.g. ${WX_SECRET_PROD}) or secret_file to the AppSecret from the WeChat admin console")
	}
	switch a.Kind {
	case KindMiniProgram, KindOfficialAccount, KindWebsite:
	case "":
		v.add(key+".kind", "", "is empty", "set kind to miniprogram, official_account or website")
	default:
		v.add(key+".kind", a.Kind, "is not an app kind", "use miniprogram, official_account or website")
	}
	switch a.TokenMode {
	case ModeStable, ModeClassic:
	default:
		v.add(key+".token_mode", a.TokenMode, "is not a token mode",
			"use stable (getStableAccessToken, the default) or classic (/cgi-bin/token)")
	}
	tickets := map[string]bool{}
	for i, t := range a.Tickets {
		tk := fmt.Sprintf("%s.tickets[%d]", key, i)
		switch {
		case t != "jsapi" && t != "wx_card":
			v.add(tk, t, "is not a ticket type", "use jsapi or wx_card")
		case tickets[t]:
			v.add(tk, t, "is listed twice", "remove the duplicate")
		}
		tickets[t] = true
	}
}

// namespaceOf returns the namespace name of a key path "namespaces.NAME.apps[i]".
func namespaceOf(key string) string {
	rest := strings.TrimPrefix(key, "namespaces.")
	if i := strings.LastIndex(rest, ".apps["); i >= 0 {
		return rest[:i]
	}
	return rest
}

func (v *validator) clients(c *Config) {
	names := map[string]bool{}
	keys := map[string]string{}
	for i, cl := range c.Clients {
		key := fmt.Sprintf("clients[%d]", i)
		switch {
		case cl.Name == "":
			v.add(key+".name", "", "is empty", "name the client (it appears in audit logs)")
		case names[cl.Name]:
			v.add(key+".name", cl.Name, "is used by another client", "give each client its own name")
		}
		names[cl.Name] = true
		switch {
		case cl.KeySHA256 == "":
			v.add(key+".key_sha256", "", "is empty",
				"set the hex SHA-256 of the client's key: printf %s \"$KEY\" | sha256sum")
		case !sha256Pattern.MatchString(cl.KeySHA256):
			// Never echo it: what is pasted here by mistake is often the raw key.
			v.add(key+".key_sha256", "", "is not a 64-hex-digit sha256; looks like a raw key? (value not shown)",
				"set the hex SHA-256 of the client's key, not the key: printf %s \"$KEY\" | sha256sum")
		case keys[strings.ToLower(cl.KeySHA256)] != "":
			v.add(key+".key_sha256", cl.KeySHA256, "is the same key as "+keys[strings.ToLower(cl.KeySHA256)],
				"give each client its own key")
		default:
			keys[strings.ToLower(cl.KeySHA256)] = key
		}
		if len(cl.Allow) == 0 && !cl.Admin {
			v.add(key+".allow", "", "is empty, so this client may read no token",
				`list what it may read, e.g. allow: ["prod/wx0123456789abcdef", "staging/*"]`)
		}
		for j, pat := range cl.Allow {
			v.allow(fmt.Sprintf("%s.allow[%d]", key, j), pat, c)
		}
	}
}

func (v *validator) allow(key, pat string, c *Config) {
	ns, appid, authorizer, ok := splitAllow(pat)
	if !ok {
		v.add(key, pat, `is not a "namespace/appid" or "namespace/component_appid/authorizer_appid" pattern`,
			`write "prod/wx0123456789abcdef", "staging/*", "*/*", or for an Open Platform component's authorizers "prod/wx0123456789abcdef/*"`)
		return
	}
	if authorizer != "" {
		v.authorizerAllow(key, pat, ns, appid, authorizer, c)
		return
	}
	if appid != "*" && !appIDPattern.MatchString(appid) {
		v.add(key, pat, `names an appid that is not "wx" followed by 16 lowercase hex digits`,
			`write a configured appid or * after the "/"`)
		return
	}
	if ns == "*" {
		if appid != "*" && !c.hasAppID(appid) && !c.hasComponent(appid) {
			v.add(key, pat, "names an appid that no namespace configures (as an app or a component)", "correct the appid or add the app")
		}
		return
	}
	nsCfg, found := c.Namespaces[ns]
	if !found {
		v.add(key, pat, "names unknown namespace "+ns,
			"use one of the configured namespaces ("+strings.Join(c.NamespaceNames(), ", ")+") or *")
		return
	}
	if appid != "*" {
		if _, ok := nsCfg.app(appid); !ok {
			if _, ok := c.Component(ns, appid); !ok {
				v.add(key, pat, "names an appid that namespace "+ns+" does not configure (as an app or a component)", "correct the appid or add the app to "+ns)
			}
		}
	}
}

// authorizerAllow checks a three-part pattern
// "namespace/component_appid/authorizer_appid": it grants the tokens of
// the accounts that authorized a component, which two-part patterns ("*/*"
// included) never do.
func (v *validator) authorizerAllow(key, pat, ns, component, authorizer string, c *Config) {
	if component != "*" && !appIDPattern.MatchString(component) {
		v.add(key, pat, `names a component_appid that is not "wx" followed by 16 lowercase hex digits`,
			`write "namespace/component_appid/authorizer_appid" with a configured component's appid, or *, in the middle`)
		return
	}
	if authorizer != "*" && !appIDPattern.MatchString(authorizer) {
		v.add(key, pat, `names an authorizer_appid that is not "wx" followed by 16 lowercase hex digits`,
			`write the authorizer's appid, or * for every account that authorized the component, at the end`)
		return
	}
	if ns == "*" {
		if component != "*" && !c.hasComponent(component) {
			v.add(key, pat, "names a component_appid that no namespace configures", "correct the component_appid or add the component under components:")
		}
		return
	}
	if _, found := c.Namespaces[ns]; !found {
		v.add(key, pat, "names unknown namespace "+ns,
			"use one of the configured namespaces ("+strings.Join(c.NamespaceNames(), ", ")+") or *")
		return
	}
	if component != "*" {
		if _, ok := c.Component(ns, component); !ok {
			msg := "names a component_appid that namespace " + ns + " does not configure"
			if _, app := c.Namespaces[ns].app(component); app {
				msg += " (it is an app: apps have no authorizers; write " + ns + "/" + component + ")"
			}
			v.add(key, pat, msg, "correct the component_appid or add the component to "+ns+".components")
		}
	}
}

// hasComponent reports whether some namespace configures the component.
func (c *Config) hasComponent(appid string) bool {
	for _, ref := range c.Components() {
		if ref.Component.AppID == appid {
			return true
		}
	}
	return false
}

func (c *Config) hasAppID(appid string) bool {
	for _, ns := range c.Namespaces {
		if _, ok := ns.app(appid); ok {
			return true
		}
	}
	return false
}

// LoginEnabled reports whether public_listen is set and at least one login
// flow (login.miniprogram or login.web) is configured.
func (c *Config) LoginEnabled() bool {
	return c.PublicListen != "" && (c.Login.MiniProgram.configured() || c.Login.Web.configured())
}

func (a LoginApp) configured() bool { return a.Namespace != "" || a.AppID != "" }

func (w WebLogin) configured() bool {
	return w.Namespace != "" || w.AppID != "" || w.RedirectURI != "" || len(w.AllowedReturnURLs) > 0
}

func (v *validator) login(c *Config) {
	l := &c.Login
	if !l.MiniProgram.configured() && !l.Web.configured() {
		return
	}
	if c.PublicListen == "" {
		key := "login.miniprogram"
		if !l.MiniProgram.configured() {
			key = "login.web"
		}
		v.add(key, "", "is configured but public_listen is empty, so no login endpoint is served",
			`set public_listen (e.g. "0.0.0.0:8081") or remove the login section`)
		return
	}
	if l.JWT.Issuer == "" {
		v.add("login.jwt.issuer", "", "is empty", `leave it out (default "wxbroker") or name the issuer`)
	}
	v.positive("login.jwt.access_ttl", l.JWT.AccessTTL)
	if v.positive("login.jwt.refresh_ttl", l.JWT.RefreshTTL) && l.JWT.AccessTTL > 0 && l.JWT.RefreshTTL <= l.JWT.AccessTTL {
		v.add("login.jwt.refresh_ttl", l.JWT.RefreshTTL.String(),
			"must be longer than login.jwt.access_ttl ("+l.JWT.AccessTTL.String()+")", "e.g. access_ttl: 2h, refresh_ttl: 720h")
	}
	v.signingKey(l.JWT)
	v.encryptionKey(l)
	if l.MiniProgram.configured() {
		v.loginApp("login.miniprogram", l.MiniProgram.Namespace, l.MiniProgram.AppID, KindMiniProgram, c)
	}
	if w := l.Web; w.configured() {
		v.loginApp("login.web", w.Namespace, w.AppID, KindWebsite, c)
		if w.RedirectURI == "" {
			v.add("login.web.redirect_uri", "", "is empty",
				`set the callback URL registered for the website app, e.g. "https://example.com/api/v1/auth/web/callback"`)
		} else {
			v.absURL("login.web.redirect_uri", w.RedirectURI,
				`write the full callback URL, e.g. "https://example.com/api/v1/auth/web/callback"`)
		}
		v.absURL("login.web.qrconnect_url", w.QRConnectURL, `leave it out (default "https://open.weixin.qq.com/connect/qrconnect")`)
		if len(w.AllowedReturnURLs) == 0 {
			v.add("login.web.allowed_return_urls", "", "is empty, so no page can receive the logged-in user",
				`list the URL prefixes users may return to, e.g. ["https://example.com/"]`)
		}
		for i, u := range w.AllowedReturnURLs {
			v.absURL(fmt.Sprintf("login.web.allowed_return_urls[%d]", i), u, `write an absolute URL such as "https://example.com/"`)
		}
	}
}

func (v *validator) loginApp(key, ns, appid, kind string, c *Config) {
	if ns == "" {
		v.add(key+".namespace", "", "is empty", "name the namespace that configures the app")
	}
	if appid == "" {
		v.add(key+".appid", "", "is empty", "name the app (wx...) used for this login flow")
	}
	if ns == "" || appid == "" {
		return
	}
	a, ok := c.App(ns, appid)
	switch {
	case !ok:
		v.add(key+".appid", appid, "is not configured in namespace "+ns, "add the app to namespaces."+ns+".apps or correct namespace/appid")
	case a.Kind != kind:
		v.add(key+".appid", appid, "is an app of kind "+a.Kind+", not "+kind, "use a "+kind+" app for this login flow")
	}
}

func (v *validator) signingKey(j JWT) {
	key := "login.jwt.signing_key"
	if j.SigningKeyFile != "" {
		key += "_file"
	}
	if j.SigningKey == "" {
		if j.SigningKeyFile == "" {
			v.add("login.jwt.signing_key_file", "", "is empty",
				"create a key with: openssl genpkey -algorithm ed25519 -out jwt-ed25519.pem, and set signing_key_file to its path")
		}
		return
	}
	if _, err := j.Ed25519Key(); err != nil {
		v.add(key, j.SigningKey.String(), err.Error(), "create a key with: openssl genpkey -algorithm ed25519 -out jwt-ed25519.pem")
	}
}

func (v *validator) encryptionKey(l *Login) {
	key := "login.session_key_encryption_key"
	if l.SessionKeyEncryptionKeyFile != "" {
		key += "_file"
	}
	if l.SessionKeyEncryptionKey == "" {
		if l.SessionKeyEncryptionKeyFile == "" {
			v.add("login.session_key_encryption_key_file", "", "is empty",
				"create a key with: openssl rand -base64 32 > aes.key, and set session_key_encryption_key_file to its path")
		}
		return
	}
	if _, err := l.SessionKeyAES(); err != nil {
		v.add(key, l.SessionKeyEncryptionKey.String(), err.Error(), "create a key with: openssl rand -base64 32")
	}
}
