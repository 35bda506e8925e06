package wechattest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// errmsg returns WeChat's errmsg text for the codes the simulator answers.
func errmsg(code int) string {
	switch code {
	case -1:
		return "system error"
	case 40001:
		return "invalid credential, access_token is invalid or not latest"
	case 40002:
		return "invalid grant_type"
	case 40003:
		return "invalid openid"
	case 40009:
		return "invalid image size"
	case 40010:
		return "invalid voice size"
	case 40011:
		return "invalid video size"
	case 40012:
		return "invalid thumb size"
	case 40013:
		return "invalid appid"
	case 40014:
		return "invalid access_token"
	case 40029:
		return "invalid code"
	case 40030:
		return "invalid refresh_token"
	case 40097:
		return "invalid args"
	case 40125:
		return "invalid appsecret"
	case 40163:
		return "code been used"
	case 40226:
		return "code blocked"
	case 41001:
		return "access_token missing"
	case 41002:
		return "appid missing"
	case 41004:
		return "appsecret missing"
	case 41008:
		return "missing code"
	case 42001:
		return "access_token expired"
	case 43001:
		return "require GET method"
	case 43002:
		return "require POST method"
	case 45009:
		return "reach max api daily quota limit"
	case 45011:
		return "api minute-quota reach limit  mustslower  retry next minute"
	case 47001:
		return "data format error"
	case 45002:
		return "content size out of limit"
	case 48006:
		return "forbid to clear quota because of reaching the limit"
	case 61003:
		return "component is not authorized by this account"
	case 61004:
		return "access clientip is not registered"
	case 61005:
		return "component ticket is expired"
	case 61006:
		return "component ticket is invalid"
	case 61009:
		return "code is invalid"
	case 61010:
		return "code is expired"
	case 61011:
		return "invalid component"
	case 61023:
		return "refresh_token is invalid"
	case 76001:
		return "rid not found"
	case 76002:
		return "rid is error"
	case 76003:
		return "rid is not belong to this account"
	case 76004:
		return "rid is stale"
	case 76021:
		return "cgi_path not found"
	case 76022:
		return "could not use this cgi_path"
	case 87009:
		return "invalid signature"
	}
	return "simulated error"
}

// maxRids bounds the request records kept for rid/get.
const maxRids = 10000

// ridRecord is what rid/get reports about one failed call.
type ridRecord struct {
	appID      string
	invokeTime time.Time
	costMs     int64
	requestURL string
	reqBody    string
	respBody   string
	clientIP   string
}

// errBody builds WeChat's error body {"errcode":N,"errmsg":"text rid: …"},
// counts it and records its rid. detail replaces the standard text when set.
// Callers hold s.mu.
func (s *Sim) errBody(c *call, code int, detail string) []byte {
	msg := detail
	if msg == "" {
		msg = errmsg(code)
	}
	now := s.now()
	rid := newRID(now)
	body, _ := json.Marshal(struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}{code, msg + " rid: " + rid})
	s.st.answered[code]++
	s.recordRID(rid, &ridRecord{
		appID:      c.appID,
		invokeTime: now,
		costMs:     time.Since(c.start).Milliseconds(),
		requestURL: redactQuery(c.r.URL),
		reqBody:    redactBody(c),
		respBody:   string(body),
		clientIP:   c.ip.String(),
	})
	return body
}

func (s *Sim) recordRID(rid string, rec *ridRecord) {
	if len(s.ridOrder) >= maxRids {
		delete(s.rids, s.ridOrder[0])
		s.ridOrder = s.ridOrder[1:]
	}
	s.rids[rid] = rec
	s.ridOrder = append(s.ridOrder, rid)
}

// newRID returns a request id shaped like WeChat's: the unix time in hex and
// two random words, e.g. "6004f3da-1529ba72-5c345f67".
func newRID(now time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%08x-%08x-%08x", uint32(now.Unix()), binary.BigEndian.Uint32(b[:4]), binary.BigEndian.Uint32(b[4:]))
}

func validRID(rid string) bool {
	parts := strings.Split(rid, "-")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if len(p) != 8 || strings.Trim(p, "0123456789abcdef") != "" {
			return false
		}
	}
	return true
}

// sensitive reports whether rid/get must mask the value of a parameter.
func sensitive(name string) bool {
	switch name {
	case "secret", "appsecret", "component_appsecret", "access_token", "component_access_token",
		"js_code", "code", "refresh_token", "authorizer_refresh_token", "component_verify_ticket",
		"component_secret", "authorization_code", "pre_auth_code":
		return true
	}
	return false
}

// redactQuery returns the request's path and query with credentials masked.
func redactQuery(u *url.URL) string {
	q := u.Query()
	for k := range q {
		if sensitive(k) {
			q.Set(k, "***")
		}
	}
	if len(q) == 0 {
		return u.Path
	}
	return u.Path + "?" + q.Encode()
}

// redactBody returns the request body with credentials masked.
func redactBody(c *call) string {
	if !c.jsonOK {
		if len(c.body) == 0 {
			return ""
		}
		return "(not JSON)"
	}
	m := make(map[string]any, len(c.fields))
	for k, v := range c.fields {
		if sensitive(k) {
			v = "***"
		}
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}
