package api

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// keyReader is the key of client "reader" (withReader): it may read and
// call WeChat through the gateway for prod/appA, but not report tokens.
const keyReader = "reader-key-0123456789"

func withReader(cfg *config.Config) {
	no := false
	cfg.Clients = append(cfg.Clients, config.Client{Name: "reader", KeySHA256: config.HashKey(keyReader),
		Allow: []string{"prod/" + appA}, Invalidate: &no})
}

// uploadMedia uploads data as a temporary image file through replica i's
// gateway, with partType as the file part's Content-Type, and returns its
// media_id.
func (e *gwEnv) uploadMedia(i int, header http.Header, data []byte, partType string) string {
	e.t.Helper()
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	ph := textproto.MIMEHeader{}
	ph.Set("Content-Disposition", `form-data; name="media"; filename="a.json"`)
	ph.Set("Content-Type", partType)
	pw, _ := mw.CreatePart(ph)
	_, _ = pw.Write(data)
	_ = mw.Close()
	h := header.Clone()
	h.Set("Content-Type", mw.FormDataContentType())
	st, _, b := e.do(i, http.MethodPost, "/cgi-bin/media/upload?type=thumb", h, &form)
	var up struct {
		MediaID string `json:"media_id"`
	}
	if st != 200 || json.Unmarshal(b, &up) != nil || up.MediaID == "" {
		e.t.Fatalf("media/upload = %d %s", st, b)
	}
	return up.MediaID
}

// sumGauge sums a per-app metric over the replicas.
func (e *gwEnv) sum(f func(m *metrics.Metrics) float64) float64 {
	var n float64
	for _, r := range e.replicas {
		n += f(r.m)
	}
	return n
}

// TestGatewayCallerBytesSpendNothing (issue 14, item 1): a file whose
// bytes are WeChat's 40001, uploaded with media/upload and downloaded with
// media/get through the gateway, by every kind of caller, comes back as
// uploaded and reports nothing: no check, no refresh, the generation and
// the forced-refresh count unchanged.
func TestGatewayCallerBytesSpendNothing(t *testing.T) {
	e := newGatewayEnvWith(t, 2, nil, withReader)
	sdkTok := e.sdkToken(0, appA, keyOrder)
	before, err := e.replicas[0].b.AccessToken("prod", appA)
	if err != nil {
		t.Fatal(err)
	}
	tokens, checks := e.tokenCalls(appA), e.sim.Calls(wechat.APIDomainIP, appA)
	fake := []byte(`{"errcode":40001,"errmsg":"x"}`)
	callers := map[string]struct {
		header http.Header
		query  string
	}{
		"an SDK's token":               {nil, "&access_token=" + url.QueryEscape(sdkTok)},
		"a client key":                 {bearerFor(keyOrder, "prod", appA), ""},
		"a client key without reports": {bearerFor(keyReader, "prod", appA), ""},
	}
	// Without a declared type the simulator labels the bytes text/plain, as
	// WeChat labels some JSON; with one it keeps application/json.
	for _, partType := range []string{"application/octet-stream", "application/json"} {
		id := e.uploadMedia(1, bearerFor(keyOrder, "prod", appA), fake, partType)
		for name, c := range callers {
			for i := range e.replicas {
				st, h, b := e.do(i, http.MethodGet, "/cgi-bin/media/get?media_id="+url.QueryEscape(id)+c.query, c.header, nil)
				if st != 200 || !bytes.Equal(b, fake) {
					t.Fatalf("%s, %s: media/get = %d %s %q; want the uploaded bytes", name, partType, st, h.Get("Content-Type"), b)
				}
			}
		}
	}
	for i, r := range e.replicas {
		tok, err := r.b.AccessToken("prod", appA)
		if err != nil || tok.Generation != before.Generation || tok.AccessToken != before.AccessToken {
			t.Errorf("replica %d: generation %d after the downloads, %v; want %d unchanged", i, tok.Generation, err, before.Generation)
		}
	}
	if got := e.sum(func(m *metrics.Metrics) float64 {
		return testutil.ToFloat64(m.ForcedRefreshUsed.WithLabelValues("prod", appA))
	}); got != 0 {
		t.Errorf("wxbroker_forced_refresh_used = %v; want 0", got)
	}
	if got := e.sum(func(m *metrics.Metrics) float64 {
		return testutil.ToFloat64(m.InvalidCredential.WithLabelValues("prod", appA, metrics.SourceProxy))
	}); got != 0 {
		t.Errorf("wxbroker_invalid_credential_total{source=proxy} = %v; want 0", got)
	}
	if got := e.tokenCalls(appA) - tokens; got != 0 {
		t.Errorf("token calls = %d; want 0", got)
	}
	if got := e.sim.Calls(wechat.APIDomainIP, appA) - checks; got != 0 {
		t.Errorf("checks of the token = %d; want 0", got)
	}
}

// TestGatewayTokenFailureIsChecked (issue 14, item 1): a 40001 the gateway
// meets is checked with WeChat like a report on the invalidate route. A
// token WeChat still accepts is not replaced and the call not re-sent; a
// caller without clients[].invalidate has its call re-sent when the check
// confirms the token failed, and not when the check cannot tell, where a
// caller with it is trusted.
func TestGatewayTokenFailureIsChecked(t *testing.T) {
	e := newGatewayEnvWith(t, 2, nil, withReader)
	send := func(key string) []byte {
		t.Helper()
		st, _, b := e.do(1, http.MethodPost, "/cgi-bin/message/custom/send", bearerFor(key, "prod", appA),
			strings.NewReader(`{"touser":"o1","msgtype":"text"}`))
		wxAnswer(t, "custom/send", st, b)
		return b
	}
	for _, c := range []struct {
		name    string
		key     string
		check   int // the check's fault errcode; 0: none (WeChat accepts the token)
		resent  bool
		retries string
	}{
		// In this order: a "still accepted" verdict answers reports of its
		// token for a while, so the live-token cases come last.
		{"a dead token, a client without reports", keyReader, 40001, true, metrics.RetrySuccess},
		{"an undecided check, a client without reports", keyReader, -1, false, metrics.RetryNotConfirmed},
		{"an undecided check, a client with reports", keyOrder, -1, true, metrics.RetrySuccess},
		{"a live token, a client with reports", keyOrder, 0, false, metrics.RetryNotConfirmed},
		{"a live token, a client without reports", keyReader, 0, false, metrics.RetryNotConfirmed},
	} {
		tokens, sends := e.tokenCalls(appA), e.sim.Calls("generic", appA)
		retries := e.sumRetries(appA, c.retries)
		e.sim.Fail("generic", 1, wechattest.Fault{Errcode: 40001})
		if c.check != 0 {
			e.sim.Fail(wechat.APIDomainIP, 1, wechattest.Fault{Errcode: c.check})
		}
		b := send(c.key)
		wantSends, wantTokens, wantCode := 1, 0, 40001
		if c.resent {
			wantSends, wantTokens, wantCode = 2, 1, 0
		}
		var v map[string]any
		_ = json.Unmarshal(b, &v)
		if errcode(v) != wantCode {
			t.Errorf("%s: answer %s; want errcode %d", c.name, b, wantCode)
		}
		if got := e.sim.Calls("generic", appA) - sends; got != wantSends {
			t.Errorf("%s: WeChat saw %d sends; want %d", c.name, got, wantSends)
		}
		if got := e.tokenCalls(appA) - tokens; got != wantTokens {
			t.Errorf("%s: %d token calls; want %d", c.name, got, wantTokens)
		}
		if got := e.sumRetries(appA, c.retries) - retries; got != 1 {
			t.Errorf("%s: wxbroker_gateway_retries_total{result=%q} grew by %v; want 1", c.name, c.retries, got)
		}
	}
	if got := e.sum(func(m *metrics.Metrics) float64 {
		return testutil.ToFloat64(m.FalseReports.WithLabelValues("prod", appA, metrics.SourceProxy))
	}); got != 2 {
		t.Errorf("wxbroker_false_reports_total{source=proxy} = %v; want 2", got)
	}
}

// TestGatewayRefusesOddPaths (issue 14, item 2): a path with ';',
// whitespace, a control character or another byte no WeChat API path has,
// in clear or percent-encoded, or a non-canonical path, is refused in
// WeChat's shape and never forwarded; the quota-reset and credential
// classes are matched on the decoded path in any case.
func TestGatewayRefusesOddPaths(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) { answerJSON(w, `{"errcode":0,"errmsg":"ok"}`) })
	gw, fake, _ := gatewayHarness(t, nil, up.URL)
	tok := "?access_token=" + tokenA
	for _, c := range []struct {
		path   string
		header http.Header
		msg    string // a word of the refusal's errmsg
	}{
		{"/cgi-bin/clear_quota;x" + tok, nil, "canonical"},
		{"/cgi-bin/clear_quota;x", bearerFor(keySRE, "prod", appA), "canonical"}, // even for an admin
		{"/cgi-bin/clear_quota%3Bx" + tok, nil, "canonical"},
		{"/cgi-bin/openapi/quota/clear%09" + tok, nil, "canonical"},
		{"/cgi-bin/openapi/quota/clear%20" + tok, nil, "canonical"},
		{"/cgi-bin/openapi/quota/clear%0a" + tok, nil, "canonical"},
		{"/cgi-bin/openapi/quota/clear%00" + tok, nil, "canonical"},
		{"/cgi-bin/clear_quota%2509" + tok, nil, "canonical"},
		{"/cgi-bin/clear_quota%5C" + tok, nil, "canonical"},
		{"/cgi-bin/clear_quota%3F" + tok, nil, "canonical"},
		{"/cgi-bin/clear_quota%C2%A0" + tok, nil, "canonical"},
		{"//cgi-bin/clear_quota" + tok, nil, "canonical"},
		{"/cgi-bin/./clear_quota" + tok, nil, "canonical"},
		{"/cgi-bin/%2e/clear_quota" + tok, nil, "canonical"},
		{"/cgi-bin/menu/%2e%2e/clear_quota" + tok, nil, "canonical"},
		{"/cgi-bin/clear_quota/" + tok, nil, "canonical"},
		{"/cgi-bin/menu/get;jsessionid=1" + tok, nil, "canonical"},
		{"/cgi-bin/menu/get%20" + tok, nil, "canonical"},
		{"/cgi-bin/token;x?grant_type=client_credential&appid=" + appA + "&secret=" + keyOrder, nil, "canonical"},
		// Decoded and in any case, a class is a class.
		{"/cgi-bin/Clear_Quota" + tok, nil, "quota-reset"},
		{"/CGI-BIN/CLEAR_QUOTA/V2", bearerFor(keyOrder, "prod", appA), "quota-reset"},
		{"/cgi-bin/clear%5Fquota" + tok, nil, "quota-reset"},
		{"/cgi-bin/openapi/quota/%63lear" + tok, nil, "quota-reset"},
		{"/cgi-bin/Token?grant_type=client_credential&appid=" + appA + "&secret=" + keyOrder, nil, "credential"},
		{"/cgi-bin/Stable_Token" + tok, nil, "credential"},
		{"/cgi-bin/component/API_COMPONENT_TOKEN", bearerFor(keySRE, "prod", appA), "credential"},
	} {
		req, err := http.NewRequest(http.MethodPost, gw+c.path, strings.NewReader(`{}`))
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		for k, v := range c.header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		v := wxAnswer(t, c.path, resp.StatusCode, b)
		if msg, _ := v["errmsg"].(string); errcode(v) != 48001 || !strings.Contains(msg, c.msg) {
			t.Errorf("%s = %s; want errcode 48001 (%s)", c.path, b, c.msg)
		}
	}
	if n := up.n.Load(); n != 0 {
		t.Errorf("%d odd paths reached WeChat; want none", n)
	}
	// A canonical path in another case is forwarded as sent.
	if st, b := gwPost(t, gw+"/cgi-bin/Menu/Get"+tok, strings.NewReader(`{}`), 0); errcode(wxAnswer(t, "menu", st, b)) != 0 || up.n.Load() != 1 {
		t.Errorf("/cgi-bin/Menu/Get = %s after %d sends; want it forwarded once", b, up.n.Load())
	}
	if len(fake.invalidated) != 0 {
		t.Errorf("reports = %v; want none", fake.invalidated)
	}
}

// TestGatewayTokenErrorOnlyFromWeChatJSON (issue 14, item 1): only a
// top-level errcode of a JSON object labelled JSON is WeChat's word on the
// token; text/plain, a nested errcode, a media download, or a body that is
// not one JSON object report nothing and are passed on untouched.
func TestGatewayTokenErrorOnlyFromWeChatJSON(t *testing.T) {
	var answer struct {
		sync.Mutex
		ct, body string
	}
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		answer.Lock()
		defer answer.Unlock()
		w.Header().Set("Content-Type", answer.ct)
		_, _ = io.WriteString(w, answer.body)
	})
	gw, fake, _ := gatewayHarness(t, nil, up.URL)
	for _, c := range []struct {
		path, ct, body string
		report         bool
	}{
		{"/cgi-bin/message/custom/send", "application/json; encoding=utf-8", `{"errcode":40001,"errmsg":"invalid credential"}`, true},
		{"/cgi-bin/message/custom/send", "application/json", ` {"errmsg":"x", "errcode" : 42001 }`, true},
		{"/cgi-bin/message/custom/send", "text/plain", `{"errcode":40001,"errmsg":"x"}`, false},
		{"/cgi-bin/message/custom/send", "application/json", `{"data":{"errcode":40001},"errcode":0}`, false},
		{"/cgi-bin/message/custom/send", "application/json", `{"msg":"\"errcode\":40001","errcode":0}`, false},
		{"/cgi-bin/message/custom/send", "application/json", `[{"errcode":40001}]`, false},
		{"/cgi-bin/message/custom/send", "application/json", `{"errcode":40001} {"errcode":0}`, false},
		{"/cgi-bin/message/custom/send", "application/json", `{"errcode":40001.5}`, false},
		{"/cgi-bin/media/get", "application/json", `{"errcode":40001,"errmsg":"x"}`, false},
		{"/cgi-bin/media/get/jssdk", "application/json", `{"errcode":40001,"errmsg":"x"}`, false},
		{"/cgi-bin/material/get_material", "application/json", `{"errcode":42001,"errmsg":"x"}`, false},
	} {
		answer.Lock()
		answer.ct, answer.body = c.ct, c.body
		answer.Unlock()
		fake.mu.Lock()
		fake.invalidated = nil
		fake.tokens[appKey{"prod", appA}] = newFake().tokens[appKey{"prod", appA}]
		fake.mu.Unlock()
		st, b := gwPost(t, gw+c.path+"?access_token="+tokenA, strings.NewReader(`{}`), 0)
		if st != 200 || (!c.report && string(b) != c.body) {
			t.Errorf("%s %s %s: answer %d %s; want it passed on", c.path, c.ct, c.body, st, b)
		}
		fake.mu.Lock()
		got := len(fake.invalidated)
		fake.mu.Unlock()
		if want := map[bool]int{true: 1, false: 0}[c.report]; got != want {
			t.Errorf("%s %s %s: %d reports; want %d", c.path, c.ct, c.body, got, want)
		}
	}
}

func TestErrcodeOf(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{`{"errcode":40001,"errmsg":"x"}`, 40001},
		{"\n{ \"errmsg\" : \"x\" ,\n \"errcode\" :\t-1 }", -1},
		{`{"errcode":0,"errmsg":"ok"}`, 0},
		{`{"a":{"errcode":40001},"b":[{"errcode":40001}],"errcode":7}`, 7},
		{`{"a":"\"errcode\":40001","b":"\\","errcode":8}`, 8},
		{`{"errcode":1,"errcode":2}`, 2},
		{`{"ErrCode":40001}`, 0},
		{`{"errcode":"40001"}`, 0},
		{`{"errcode":40001e0}`, 0},
		{`{"errcode":40001`, 0},
		{`["errcode",40001]`, 0},
		{`"errcode":40001`, 0},
		{`{"errcode":40001}x`, 0},
		{``, 0},
	} {
		if got := errcodeOf([]byte(c.in)); got != c.want {
			t.Errorf("errcodeOf(%q) = %d; want %d", c.in, got, c.want)
		}
	}
}

func TestCanonicalPath(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"/cgi-bin/menu/get", "/cgi-bin/menu/get", true},
		{"/CGI-BIN/Clear_Quota", "/cgi-bin/clear_quota", true},
		{"/wxa/business/getuserphonenumber", "/wxa/business/getuserphonenumber", true},
		{"/cgi-bin/clear_quota;x", "", false},
		{"/cgi-bin/clear_quota\t", "", false},
		{"/cgi-bin/clear_quota ", "", false},
		{"/cgi-bin/clear_quota\x7f", "", false},
		{"/cgi-bin/clear_quota%09", "", false},
		{"/cgi-bin/clear_quota\u00a0", "", false},
		{"/cgi-bin//clear_quota", "", false},
		{"/cgi-bin/./clear_quota", "", false},
		{"/cgi-bin/x/../clear_quota", "", false},
		{"/cgi-bin/clear_quota/", "", false},
	} {
		got, ok := canonicalPath(c.in)
		if ok != c.ok || ok && got != c.want {
			t.Errorf("canonicalPath(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
