package wechattest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
)

// refreshTTL is the lifetime of a web OAuth refresh token.
const refreshTTL = 30 * 24 * time.Hour

// codeKind is what a user code may be exchanged for.
type codeKind int

const (
	codeLogin codeKind = iota
	codeRisky
	codePhone
	codeOAuth
)

// code is a single-use user code.
type code struct {
	appID     string
	kind      codeKind
	person    string // login and OAuth codes
	phone     string // phone codes
	expiresAt time.Time
	used      bool
}

// userToken is a web OAuth access token of one user for one app.
type userToken struct {
	value     string
	appID     string
	person    string
	openID    string
	expiresAt time.Time
}

// refresh is a web OAuth refresh token.
type refresh struct {
	appID     string
	token     *userToken
	expiresAt time.Time
}

// profile is what sns/userinfo reports about a person.
type profile struct {
	nickname string
	avatar   string
}

// idHash derives a 28-character id shaped like WeChat's openid/unionid.
func idHash(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "o" + base64.RawURLEncoding.EncodeToString(sum[:])[:27]
}

// OpenID returns the openid of person in app appID. It is deterministic:
// the same (appID, person) always gives the same openid, different apps give
// different openids.
func (s *Sim) OpenID(appID, person string) string { return idHash("openid", appID, person) }

// UnionID returns the unionid of person, the same in every app (all apps are
// bound to one open platform account).
func (s *Sim) UnionID(person string) string { return idHash("unionid", person) }

// SetProfile sets the nickname and avatar URL that sns/userinfo reports for
// person. Without a profile the nickname is the person key and the avatar is
// empty.
func (s *Sim) SetProfile(person, nickname, avatarURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.profiles[person] = profile{nickname: nickname, avatar: avatarURL}
}

// newCode returns a random 32-character code like wx.login's.
func newCode() string { return strings.ToLower(rand.Text())[:16] + rand.Text()[:16] }

// mintCode stores a code and returns it. Callers hold s.mu.
func (s *Sim) mintCode(cd *code, ttl time.Duration) string {
	v := newCode()
	cd.expiresAt = s.now().Add(ttl)
	s.codes[v] = cd
	s.noteMint()
	return v
}

// MintLoginCode returns a code as wx.login gives it to person in appID:
// jscode2session accepts it once within CodeTTL (then 40163 reused, 40029
// expired or unknown).
func (s *Sim) MintLoginCode(appID, person string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintCode(&code{appID: appID, kind: codeLogin, person: person}, s.opts.CodeTTL)
}

// MintRiskyLoginCode returns a login code of a high-risk user: jscode2session
// answers 40226 for it.
func (s *Sim) MintRiskyLoginCode(appID, person string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintCode(&code{appID: appID, kind: codeRisky, person: person}, s.opts.CodeTTL)
}

// MintPhoneCode returns a code as the getPhoneNumber button gives it:
// getuserphonenumber accepts it once within CodeTTL, with an access token of
// appID. phone is a national number (country code 86) such as
// "13800138000", or "+<country code> <number>" such as "+1 2025550123".
func (s *Sim) MintPhoneCode(appID, phone string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintCode(&code{appID: appID, kind: codePhone, phone: phone}, s.opts.CodeTTL)
}

// MintOAuthCode returns a web OAuth code for person in appID, as the
// qrconnect confirm button does: sns/oauth2/access_token accepts it once
// within 2×CodeTTL (10 minutes by default).
func (s *Sim) MintOAuthCode(appID, person string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintCode(&code{appID: appID, kind: codeOAuth, person: person}, 2*s.opts.CodeTTL)
}

// redeem consumes a code of kind k belonging to appID (any app when appID is
// empty): 40029 unknown, wrong kind, wrong app or expired; 40163 reused.
// Callers hold s.mu.
func (s *Sim) redeem(c *call, v, appID string, kinds ...codeKind) (*code, []byte) {
	if v == "" {
		return nil, s.errBody(c, 41008, "")
	}
	cd, ok := s.codes[v]
	if ok {
		ok = false
		for _, k := range kinds {
			ok = ok || cd.kind == k
		}
		ok = ok && (appID == "" || cd.appID == appID)
	}
	switch {
	case !ok:
		return nil, s.errBody(c, 40029, "")
	case cd.used:
		return nil, s.errBody(c, 40163, "")
	case !s.now().Before(cd.expiresAt):
		return nil, s.errBody(c, 40029, "")
	}
	cd.used = true
	return cd, nil
}

// jscode2session serves GET /sns/jscode2session.
func (s *Sim) jscode2session(c *call) []byte {
	if c.q("grant_type") != "authorization_code" {
		return s.errBody(c, 40002, "")
	}
	a, fail := s.checkSecret(c, c.q("appid"), c.q("secret"), 40164)
	if fail != nil {
		return fail
	}
	cd, fail := s.redeem(c, c.q("js_code"), a.id, codeLogin, codeRisky)
	if fail != nil {
		return fail
	}
	if cd.kind == codeRisky {
		return s.errBody(c, 40226, "")
	}
	openID := s.OpenID(a.id, cd.person)
	var key [16]byte
	_, _ = rand.Read(key[:])
	sessionKey := base64.StdEncoding.EncodeToString(key[:])
	s.sessions[a.id+"\x00"+openID] = sessionKey
	b, _ := json.Marshal(struct {
		OpenID     string `json:"openid"`
		SessionKey string `json:"session_key"`
		UnionID    string `json:"unionid"`
		Errcode    int    `json:"errcode"`
		Errmsg     string `json:"errmsg"`
	}{openID, sessionKey, s.UnionID(cd.person), 0, "ok"})
	return b
}

// checkSession serves GET /wxa/checksession: the signature is the hex
// HMAC-SHA256 of the empty string keyed with the session_key text of the
// user's latest login.
func (s *Sim) checkSession(c *call) []byte {
	t, fail := s.checkToken(c, c.q("access_token"), appKinds()...)
	if fail != nil {
		return fail
	}
	if c.q("sig_method") != "hmac_sha256" {
		return s.errBody(c, 40097, "invalid args: sig_method must be hmac_sha256")
	}
	key, ok := s.sessions[t.appID+"\x00"+c.q("openid")]
	if !ok {
		return s.errBody(c, 87009, "")
	}
	mac := hmac.New(sha256.New, []byte(key))
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(c.q("signature")))) {
		return s.errBody(c, 87009, "")
	}
	return okBody()
}

// phoneNumber serves POST /wxa/business/getuserphonenumber.
func (s *Sim) phoneNumber(c *call) []byte {
	t, fail := s.checkToken(c, c.q("access_token"), appKinds()...)
	if fail != nil {
		return fail
	}
	if !c.jsonOK {
		return s.errBody(c, 47001, "")
	}
	v := c.field("code")
	if cd, ok := s.codes[v]; ok && cd.kind == codePhone && cd.appID != t.appID {
		// The token belongs to another app than the code.
		return s.errBody(c, 40013, "")
	}
	cd, fail := s.redeem(c, v, t.appID, codePhone)
	if fail != nil {
		return fail
	}
	country, pure, full := splitPhone(cd.phone)
	type watermark struct {
		Timestamp int64  `json:"timestamp"`
		AppID     string `json:"appid"`
	}
	type phoneInfo struct {
		PhoneNumber     string          `json:"phoneNumber"`
		PurePhoneNumber string          `json:"purePhoneNumber"`
		CountryCode     json.RawMessage `json:"countryCode"`
		Watermark       watermark       `json:"watermark"`
	}
	// countryCode is a bare number, as in WeChat's own sample (the docs
	// declare a string): clients must decode it leniently.
	cc := json.RawMessage(country)
	if country == "" || strings.Trim(country, "0123456789") != "" {
		cc, _ = json.Marshal(country)
	}
	b, _ := json.Marshal(struct {
		Errcode   int       `json:"errcode"`
		Errmsg    string    `json:"errmsg"`
		PhoneInfo phoneInfo `json:"phone_info"`
	}{0, "ok", phoneInfo{full, pure, cc, watermark{s.now().Unix(), t.appID}}})
	return b
}

// splitPhone splits a phone given to MintPhoneCode into country code, national
// number and the phoneNumber WeChat reports (with the country code only for
// foreign numbers).
func splitPhone(phone string) (country, pure, full string) {
	rest, intl := strings.CutPrefix(phone, "+")
	if !intl {
		return "86", phone, phone
	}
	if cc, num, ok := strings.Cut(rest, " "); ok {
		num = strings.ReplaceAll(num, " ", "")
		if cc == "86" {
			return cc, num, num
		}
		return cc, num, "+" + cc + num
	}
	if num, ok := strings.CutPrefix(rest, "86"); ok {
		return "86", num, num
	}
	return "", rest, phone
}

// oauthBody is the answer of sns/oauth2/access_token and refresh_token.
func (s *Sim) oauthBody(t *userToken, refreshToken string, withUnion bool) []byte {
	out := map[string]any{
		"access_token":  t.value,
		"expires_in":    int64(t.expiresAt.Sub(s.now()) / time.Second),
		"refresh_token": refreshToken,
		"openid":        t.openID,
		"scope":         "snsapi_login",
	}
	if withUnion {
		out["unionid"] = s.UnionID(t.person)
	}
	b, _ := json.Marshal(out)
	return b
}

// oauthAccessToken serves GET /sns/oauth2/access_token.
func (s *Sim) oauthAccessToken(c *call) []byte {
	if c.q("grant_type") != "authorization_code" {
		return s.errBody(c, 40002, "")
	}
	a, fail := s.checkSecret(c, c.q("appid"), c.q("secret"), 40164)
	if fail != nil {
		return fail
	}
	cd, fail := s.redeem(c, c.q("code"), a.id, codeOAuth)
	if fail != nil {
		return fail
	}
	now := s.now()
	t := &userToken{
		value:     newToken(),
		appID:     a.id,
		person:    cd.person,
		openID:    s.OpenID(a.id, cd.person),
		expiresAt: now.Add(s.opts.TokenTTL),
	}
	s.userTokens[t.value] = t
	rt := newToken()
	s.refreshes[rt] = &refresh{appID: a.id, token: t, expiresAt: now.Add(refreshTTL)}
	s.noteMint()
	return s.oauthBody(t, rt, true)
}

// oauthRefreshToken serves GET /sns/oauth2/refresh_token: an expired access
// token is replaced, a valid one gets a new expiry.
func (s *Sim) oauthRefreshToken(c *call) []byte {
	if c.q("grant_type") != "refresh_token" {
		return s.errBody(c, 40002, "")
	}
	appID := c.q("appid")
	if appID == "" {
		return s.errBody(c, 41002, "")
	}
	if _, ok := s.apps[appID]; !ok {
		return s.errBody(c, 40013, "")
	}
	rtv := c.q("refresh_token")
	rt, ok := s.refreshes[rtv]
	now := s.now()
	if !ok || rt.appID != appID || !now.Before(rt.expiresAt) {
		return s.errBody(c, 40030, "")
	}
	t := rt.token
	if now.Before(t.expiresAt) {
		t.expiresAt = now.Add(s.opts.TokenTTL)
	} else {
		nt := *t
		nt.value = newToken()
		nt.expiresAt = now.Add(s.opts.TokenTTL)
		s.userTokens[nt.value] = &nt
		rt.token = &nt
		t = &nt
		s.noteMint()
	}
	return s.oauthBody(t, rtv, false)
}

// checkUserToken validates a web OAuth access token and its openid: 41001
// missing, 40001/40014 unknown, 42001 expired, 40003 openid mismatch.
// Callers hold s.mu.
func (s *Sim) checkUserToken(c *call) (*userToken, []byte) {
	tok := c.q("access_token")
	if tok == "" {
		return nil, s.errBody(c, 41001, "")
	}
	t, ok := s.userTokens[tok]
	switch {
	case !ok && wellFormed(tok):
		return nil, s.errBody(c, 40001, "")
	case !ok:
		return nil, s.errBody(c, 40014, "")
	case !s.now().Before(t.expiresAt):
		return nil, s.errBody(c, 42001, "")
	case c.q("openid") != t.openID:
		return nil, s.errBody(c, 40003, "")
	}
	return t, nil
}

// userInfo serves GET /sns/userinfo.
func (s *Sim) userInfo(c *call) []byte {
	t, fail := s.checkUserToken(c)
	if fail != nil {
		return fail
	}
	p, ok := s.profiles[t.person]
	if !ok {
		p = profile{nickname: t.person}
	}
	b, _ := json.Marshal(struct {
		OpenID     string   `json:"openid"`
		Nickname   string   `json:"nickname"`
		Sex        int      `json:"sex"`
		Province   string   `json:"province"`
		City       string   `json:"city"`
		Country    string   `json:"country"`
		HeadImgURL string   `json:"headimgurl"`
		Privilege  []string `json:"privilege"`
		UnionID    string   `json:"unionid"`
	}{t.openID, p.nickname, 0, "", "", "", p.avatar, []string{}, s.UnionID(t.person)})
	return b
}

// oauthCheck serves GET /sns/auth.
func (s *Sim) oauthCheck(c *call) []byte {
	if _, fail := s.checkUserToken(c); fail != nil {
		return fail
	}
	return okBody()
}
