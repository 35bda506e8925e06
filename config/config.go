// Package config defines wxbroker's typed configuration: it loads YAML, expands
// ${ENV} references, reads *_file secrets, applies defaults and validates the
// result, listing every problem at once. It also derives, once, what the rest
// of wxbroker uses as given: each client's compiled access (Access), the
// refresh schedule's lead times (Refresh.StableLead, Refresh.Lead) and the
// decoded login keys (JWT.Ed25519Key, Login.SessionKeyAES).
package config

import "time"

// Config is the whole wxbroker configuration, one field per key of the YAML
// file.
type Config struct {
	InstanceID   string                `yaml:"instance_id"`
	Listen       string                `yaml:"listen"`
	PublicListen string                `yaml:"public_listen"`
	TLS          TLS                   `yaml:"tls"`
	Log          Log                   `yaml:"log"`
	Redis        Redis                 `yaml:"redis"`
	Leader       Leader                `yaml:"leader"`
	WeChat       WeChat                `yaml:"wechat"`
	Refresh      Refresh               `yaml:"refresh"`
	Namespaces   map[string]*Namespace `yaml:"namespaces"`
	Clients      []Client              `yaml:"clients"`
	Login        Login                 `yaml:"login"`
	Gateway      Gateway               `yaml:"gateway"`
	OpenPlatform OpenPlatform          `yaml:"open_platform"`

	// inlineSecrets lists the secrets written literally in the file (set by Load).
	inlineSecrets []string
}

// TLS optionally enables TLS on both listeners.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Log configures the zap logger.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | console
}

// Redis says how to reach Redis: one address is a single node, master_name
// selects Sentinel, several addresses select Cluster.
type Redis struct {
	Addrs        []string `yaml:"addrs"`
	MasterName   string   `yaml:"master_name"`
	Username     string   `yaml:"username"`
	Password     Secret   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
	DB           int      `yaml:"db"`
	KeyPrefix    string   `yaml:"key_prefix"`
}

// Leader configures leader election.
type Leader struct {
	LockTTL       time.Duration `yaml:"lock_ttl"`
	RenewInterval time.Duration `yaml:"renew_interval"`
}

// WeChat configures the WeChat API client.
type WeChat struct {
	BaseURL      string        `yaml:"base_url"`
	FallbackURLs []string      `yaml:"fallback_urls"`
	Timeout      time.Duration `yaml:"timeout"`
}

// Refresh configures the proactive refresh scheduler.
type Refresh struct {
	// BeforeExpiry is either a share of the lifetime ("25%") or a duration ("30m").
	BeforeExpiry         Portion       `yaml:"before_expiry"`
	Jitter               Portion       `yaml:"jitter"`
	Concurrency          int           `yaml:"concurrency"`
	ForceMinInterval     time.Duration `yaml:"force_min_interval"`
	ForceDailyCap        int           `yaml:"force_daily_cap"`
	StableRotationWindow time.Duration `yaml:"stable_rotation_window"`
}

// Portion is a share of a lifetime ("25%") or an absolute duration ("30m").
// Exactly one of Fraction (0 < f < 1) and Duration is set after loading.
type Portion struct {
	Fraction float64
	Duration time.Duration
}

// Of returns the portion of lifetime d.
func (p Portion) Of(d time.Duration) time.Duration {
	if p.Duration > 0 {
		return p.Duration
	}
	return time.Duration(float64(d) * p.Fraction)
}

// Namespace is one environment (prod, staging, ...). It holds apps,
// Open Platform components, or both.
type Namespace struct {
	Apps       []*App       `yaml:"apps"`
	Components []*Component `yaml:"components"`
}

// App kinds.
const (
	KindMiniProgram     = "miniprogram"
	KindOfficialAccount = "official_account"
	KindWebsite         = "website"
)

// Token modes.
const (
	ModeStable  = "stable"
	ModeClassic = "classic"
)

// App is one WeChat AppID managed in a namespace.
type App struct {
	AppID      string   `yaml:"appid"`
	Secret     Secret   `yaml:"secret"`
	SecretFile string   `yaml:"secret_file"`
	Kind       string   `yaml:"kind"`       // miniprogram | official_account | website
	TokenMode  string   `yaml:"token_mode"` // stable (default) | classic
	Tickets    []string `yaml:"tickets"`    // jsapi, wx_card
}

// Client is an internal service allowed to read tokens.
type Client struct {
	Name      string   `yaml:"name"`
	KeySHA256 string   `yaml:"key_sha256"` // hex sha256 of the client's key
	Allow     []string `yaml:"allow"`      // "namespace/appid" patterns, "*" allowed in either part
	Admin     bool     `yaml:"admin"`
	// Invalidate lets the client report a failed token (the invalidate
	// route), which may spend the app's forced-refresh budget. Nil: true.
	Invalidate *bool `yaml:"invalidate"`
	// InvalidatePerMinute bounds the client's reports per minute (all apps
	// together); the burst is the same number. 0: DefaultInvalidatePerMinute.
	InvalidatePerMinute int `yaml:"invalidate_per_minute"`

	// access is the compiled form of this entry (Config.Compile).
	access *Access
}

// Login configures the user-login endpoints on public_listen.
type Login struct {
	JWT                         JWT      `yaml:"jwt"`
	SessionKeyEncryptionKey     Secret   `yaml:"session_key_encryption_key"`
	SessionKeyEncryptionKeyFile string   `yaml:"session_key_encryption_key_file"`
	MiniProgram                 LoginApp `yaml:"miniprogram"`
	Web                         WebLogin `yaml:"web"`
	// TrustedProxies lists the CIDRs (or single IPs) of reverse proxies
	// whose X-Forwarded-For header names the client. Empty (the default):
	// the client is the TCP peer, and X-Forwarded-For is ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// RateLimit bounds the anonymous and WeChat-calling login routes per
	// client IP.
	RateLimit LoginRateLimit `yaml:"rate_limit"`
}

// LoginRateLimit is a token bucket per client IP and route.
type LoginRateLimit struct {
	PerMinute int `yaml:"per_minute"` // refill rate; 0 turns the limit off
	Burst     int `yaml:"burst"`      // bucket size
}

// JWT configures access tokens and refresh tokens.
type JWT struct {
	Issuer         string        `yaml:"issuer"`
	SigningKey     Secret        `yaml:"signing_key"` // PKCS#8 PEM of an Ed25519 key
	SigningKeyFile string        `yaml:"signing_key_file"`
	AccessTTL      time.Duration `yaml:"access_ttl"`
	RefreshTTL     time.Duration `yaml:"refresh_ttl"`
	// RefreshReuseWindow is how long after a rotation the previous refresh
	// token still answers the new pair (a client retrying a lost answer);
	// later reuse revokes the session.
	RefreshReuseWindow time.Duration `yaml:"refresh_reuse_window"`
	// AccessRefreshLeeway is how long after its expiry an access token may
	// still be exchanged for a new pair on /api/v1/auth/refresh (Bearer);
	// 0: only an unexpired access token. A refresh token in the body works
	// for refresh_ttl regardless.
	AccessRefreshLeeway time.Duration `yaml:"access_refresh_leeway"`
}

// LoginApp names the app a login flow uses.
type LoginApp struct {
	Namespace string `yaml:"namespace"`
	AppID     string `yaml:"appid"`
}

// WebLogin configures website QR login.
type WebLogin struct {
	Namespace         string   `yaml:"namespace"`
	AppID             string   `yaml:"appid"`
	RedirectURI       string   `yaml:"redirect_uri"`
	QRConnectURL      string   `yaml:"qrconnect_url"`
	AllowedReturnURLs []string `yaml:"allowed_return_urls"`
	CookieSecure      *bool    `yaml:"cookie_secure"`
}
