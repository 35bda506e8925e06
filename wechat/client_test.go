package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every value below is a secret that must never appear in an error.
const (
	tAppID       = "wx1234567890abcdef"
	tSecret      = "APPSECRET-5f4dcc3b5aa765d61d8327deb882cf99"
	tToken       = "ACCESSTOKEN-74_Zm9vYmFyYmF6cXV4"
	tCode        = "JSCODE-0a1b2c3d4e5f6a7b"
	tSessionKey  = "SESSIONKEY-HyVFkGl5F5OQWJZZ"
	tRefresh     = "REFRESHTOKEN-9e107d9d372bb6826bd81d"
	tCompSecret  = "COMPONENTSECRET-e4d909c290d0fb1c"
	tTicket      = "VERIFYTICKET-ticket-d41d8cd98f00b204"
	tCompToken   = "COMPONENTTOKEN-a87ff679a2f3e71d"
	tAuthRefresh = "AUTHREFRESH-c4ca4238a0b92382"
)

var allSecrets = []string{tSecret, tToken, tCode, tSessionKey, tRefresh, tCompSecret, tTicket, tCompToken, tAuthRefresh,
	SessionSignature(tSessionKey, "")}

// assertNoSecret fails the test if any of secrets shows up in err's text, in
// the text of any error it wraps, or in a URL it carries.
func assertNoSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	texts := []string{fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
	var walk func(e error)
	walk = func(e error) {
		for e != nil {
			texts = append(texts, e.Error())
			var ue *url.Error
			if errors.As(e, &ue) {
				texts = append(texts, ue.URL)
			}
			var te *TransportError
			if errors.As(e, &te) {
				for _, p := range te.earlier {
					walk(p)
				}
			}
			if j, ok := e.(interface{ Unwrap() []error }); ok {
				for _, x := range j.Unwrap() {
					walk(x)
				}
				return
			}
			e = errors.Unwrap(e)
		}
	}
	walk(err)
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for _, text := range texts {
			if strings.Contains(text, s) || strings.Contains(text, url.QueryEscape(s)) {
				t.Errorf("error leaks secret %q: %s", s, text)
				break
			}
		}
	}
}

// apiCase is one client call with the request WeChat must see and a success answer.
type apiCase struct {
	name   string
	api    string
	method string
	path   string
	query  url.Values     // exact query WeChat must receive
	body   map[string]any // exact JSON body WeChat must receive; nil: no body
	answer string
	call   func(ctx context.Context, c *Client) (any, error)
	want   any
	codes  []int // documented errcodes of this API
}

func apiCases() []apiCase {
	return []apiCase{
		{
			name: "Token", api: APIToken, method: "GET", path: "/cgi-bin/token",
			query:  url.Values{"grant_type": {"client_credential"}, "appid": {tAppID}, "secret": {tSecret}},
			answer: `{"access_token":"AT1","expires_in":7200}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return c.Token(ctx, tAppID, tSecret) },
			want:   Token{AccessToken: "AT1", ExpiresIn: 2 * time.Hour},
			codes:  []int{-1, 40001, 40002, 40013, 40125, 40164, 40243, 41002, 41004, 45009, 61004, 89501, 89503, 89506, 89507},
		},
		{
			name: "StableToken", api: APIStableToken, method: "POST", path: "/cgi-bin/stable_token",
			query:  url.Values{},
			body:   map[string]any{"grant_type": "client_credential", "appid": tAppID, "secret": tSecret, "force_refresh": true},
			answer: `{"access_token":"AT2","expires_in":6000}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return c.StableToken(ctx, tAppID, tSecret, true) },
			want:   Token{AccessToken: "AT2", ExpiresIn: 6000 * time.Second},
			codes:  []int{-1, 40001, 40013, 40125, 40164, 40243, 41002, 41004, 45009, 89503},
		},
		{
			name: "Ticket", api: APIGetTicket, method: "GET", path: "/cgi-bin/ticket/getticket",
			query:  url.Values{"access_token": {tToken}, "type": {"jsapi"}},
			answer: `{"errcode":0,"errmsg":"ok","ticket":"TK","expires_in":7200}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return c.Ticket(ctx, tToken, "jsapi") },
			want:   Ticket{Ticket: "TK", ExpiresIn: 2 * time.Hour},
			codes:  []int{-1, 40001, 40014, 42001, 45009},
		},
		{
			name: "Code2Session", api: APIJSCode2Session, method: "GET", path: "/sns/jscode2session",
			query:  url.Values{"appid": {tAppID}, "secret": {tSecret}, "js_code": {tCode}, "grant_type": {"authorization_code"}},
			answer: `{"openid":"o1","session_key":"SK","unionid":"u1","errcode":0,"errmsg":""}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return c.Code2Session(ctx, tAppID, tSecret, tCode) },
			want:   Session{OpenID: "o1", SessionKey: "SK", UnionID: "u1"},
			codes:  []int{-1, 40029, 40163, 40226, 45011, 40164, 40013, 40125},
		},
		{
			name: "CheckSession", api: APICheckSession, method: "GET", path: "/wxa/checksession",
			query: url.Values{"access_token": {tToken}, "signature": {SessionSignature(tSessionKey, "")},
				"openid": {"o1"}, "sig_method": {"hmac_sha256"}},
			answer: `{"errcode":0,"errmsg":"ok"}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.CheckSession(ctx, tToken, "o1", tSessionKey)
			},
			codes: []int{87009, 40001, 42001},
		},
		{
			name: "UserPhoneNumber", api: APIPhoneNumber, method: "POST", path: "/wxa/business/getuserphonenumber",
			query:  url.Values{"access_token": {tToken}},
			body:   map[string]any{"code": tCode},
			answer: `{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"` + tAppID + `"}}}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return c.UserPhoneNumber(ctx, tToken, tCode) },
			want: PhoneInfo{PhoneNumber: "13800138000", PurePhoneNumber: "13800138000", CountryCode: "86",
				Watermark: Watermark{Timestamp: 1637744274, AppID: tAppID}},
			codes: []int{-1, 40029, 45011, 40013, 40001},
		},
		{
			name: "OAuthAccessToken", api: APIOAuthAccessToken, method: "GET", path: "/sns/oauth2/access_token",
			query:  url.Values{"appid": {tAppID}, "secret": {tSecret}, "code": {tCode}, "grant_type": {"authorization_code"}},
			answer: `{"access_token":"UAT","expires_in":7200,"refresh_token":"URT","openid":"o1","scope":"snsapi_login","unionid":"u1"}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.OAuthAccessToken(ctx, tAppID, tSecret, tCode)
			},
			want: OAuthToken{AccessToken: "UAT", ExpiresIn: 2 * time.Hour, RefreshToken: "URT", OpenID: "o1",
				Scope: "snsapi_login", UnionID: "u1"},
			codes: []int{40029, 40163, 42003, 40125, 40013},
		},
		{
			name: "OAuthRefreshToken", api: APIOAuthRefreshToken, method: "GET", path: "/sns/oauth2/refresh_token",
			query:  url.Values{"appid": {tAppID}, "grant_type": {"refresh_token"}, "refresh_token": {tRefresh}},
			answer: `{"access_token":"UAT2","expires_in":7200,"refresh_token":"URT","openid":"o1","scope":"snsapi_login"}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return c.OAuthRefreshToken(ctx, tAppID, tRefresh) },
			want: OAuthToken{AccessToken: "UAT2", ExpiresIn: 2 * time.Hour, RefreshToken: "URT", OpenID: "o1",
				Scope: "snsapi_login"},
			codes: []int{40030, 42002, 42007},
		},
		{
			name: "UserInfo", api: APIUserInfo, method: "GET", path: "/sns/userinfo",
			query: url.Values{"access_token": {tToken}, "openid": {"o1"}, "lang": {"zh_CN"}},
			answer: `{"openid":"o1","nickname":"Band","sex":1,"province":"Guangdong","city":"Guangzhou","country":"CN",` +
				`"headimgurl":"https://thirdwx.qlogo.cn/x/0","privilege":["chinaunicom"],"unionid":"u1"}`,
			call: func(ctx context.Context, c *Client) (any, error) { return c.UserInfo(ctx, tToken, "o1") },
			want: UserInfo{OpenID: "o1", Nickname: "Band", Sex: 1, Province: "Guangdong", City: "Guangzhou", Country: "CN",
				HeadImgURL: "https://thirdwx.qlogo.cn/x/0", Privilege: []string{"chinaunicom"}, UnionID: "u1"},
			codes: []int{40001, 42001, 40003, 48001, 42007},
		},
		{
			name: "OAuthCheck", api: APIOAuthCheck, method: "GET", path: "/sns/auth",
			query:  url.Values{"access_token": {tToken}, "openid": {"o1"}},
			answer: `{"errcode":0,"errmsg":"ok"}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.OAuthCheck(ctx, tToken, "o1") },
			codes:  []int{40003, 42001, 40001},
		},
		{
			name: "ComponentToken", api: APIComponentToken, method: "POST", path: "/cgi-bin/component/api_component_token",
			query: url.Values{},
			body: map[string]any{"component_appid": tAppID, "component_appsecret": tCompSecret,
				"component_verify_ticket": tTicket},
			answer: `{"component_access_token":"CAT","expires_in":7200}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.ComponentToken(ctx, tAppID, tCompSecret, tTicket)
			},
			want:  ComponentToken{AccessToken: "CAT", ExpiresIn: 2 * time.Hour},
			codes: []int{61004, 61005, 61006, 61011, 40125, 41004, 45009, 47001, 40001, 48001},
		},
		{
			name: "AuthorizerToken", api: APIAuthorizerToken, method: "POST", path: "/cgi-bin/component/api_authorizer_token",
			query: url.Values{"component_access_token": {tCompToken}},
			body: map[string]any{"component_appid": tAppID, "authorizer_appid": "wxaaaaaaaaaaaaaaaa",
				"authorizer_refresh_token": tAuthRefresh},
			answer: `{"authorizer_access_token":"AAT","expires_in":7200,"authorizer_refresh_token":"ART2"}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.AuthorizerToken(ctx, tCompToken, tAppID, "wxaaaaaaaaaaaaaaaa", tAuthRefresh)
			},
			want:  AuthorizerToken{AccessToken: "AAT", ExpiresIn: 2 * time.Hour, RefreshToken: "ART2"},
			codes: []int{61023, 40001, 42001, 45009, 61004},
		},
		{
			name: "StartPushTicket", api: APIStartPushTicket, method: "POST", path: "/cgi-bin/component/api_start_push_ticket",
			query:  url.Values{},
			body:   map[string]any{"component_appid": tAppID, "component_secret": tCompSecret},
			answer: `{"errcode":0,"errmsg":"ok"}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return nil, c.StartPushTicket(ctx, tAppID, tCompSecret)
			},
			codes: []int{40125, 40013, 61004},
		},
		{
			name: "PreAuthCode", api: APICreatePreAuthCode, method: "POST", path: "/cgi-bin/component/api_create_preauthcode",
			query:  url.Values{"component_access_token": {tCompToken}},
			body:   map[string]any{"component_appid": tAppID},
			answer: `{"pre_auth_code":"preauthcode@@@P","expires_in":1800}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.PreAuthCode(ctx, tCompToken, tAppID)
			},
			want:  PreAuthCode{Code: "preauthcode@@@P", ExpiresIn: 30 * time.Minute},
			codes: []int{40001, 42001, 61004},
		},
		{
			name: "QueryAuth", api: APIQueryAuth, method: "POST", path: "/cgi-bin/component/api_query_auth",
			query: url.Values{"component_access_token": {tCompToken}},
			body:  map[string]any{"component_appid": tAppID, "authorization_code": tCode},
			answer: `{"authorization_info":{"authorizer_appid":"wxaaaaaaaaaaaaaaaa","authorizer_access_token":"AAT","expires_in":7200,` +
				`"authorizer_refresh_token":"ART","func_info":[{"funcscope_category":{"id":1}},{"funcscope_category":{"id":15}}]}}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.QueryAuth(ctx, tCompToken, tAppID, tCode)
			},
			want: Authorization{AuthorizerAppID: "wxaaaaaaaaaaaaaaaa", AccessToken: "AAT", ExpiresIn: 2 * time.Hour,
				RefreshToken: "ART", FuncScopes: []int{1, 15}},
			codes: []int{61009, 61010, 40001, 61004},
		},
		{
			name: "AuthorizerList", api: APIGetAuthorizerList, method: "POST", path: "/cgi-bin/component/api_get_authorizer_list",
			query:  url.Values{"component_access_token": {tCompToken}},
			body:   map[string]any{"component_appid": tAppID, "offset": float64(0), "count": float64(500)},
			answer: `{"total_count":2,"list":[{"authorizer_appid":"wxaaaaaaaaaaaaaaaa","refresh_token":"R1","auth_time":1700000000},{"authorizer_appid":"wxbbbbbbbbbbbbbbbb","refresh_token":"R2","auth_time":"1700000001"}]}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				list, total, err := c.AuthorizerList(ctx, tCompToken, tAppID, 0, 500)
				return authorizerPage{list, total}, err
			},
			want: authorizerPage{[]AuthorizerEntry{
				{AppID: "wxaaaaaaaaaaaaaaaa", RefreshToken: "R1", AuthTime: time.Unix(1700000000, 0)},
				{AppID: "wxbbbbbbbbbbbbbbbb", RefreshToken: "R2", AuthTime: time.Unix(1700000001, 0)},
			}, 2},
			codes: []int{40001, 61004},
		},
		{
			name: "ClearQuota", api: APIClearQuota, method: "POST", path: "/cgi-bin/clear_quota/v2",
			query:  url.Values{"appid": {tAppID}, "appsecret": {tSecret}},
			body:   map[string]any{"appid": tAppID, "appsecret": tSecret},
			answer: `{"errcode":0,"errmsg":"ok"}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return nil, c.ClearQuota(ctx, tAppID, tSecret) },
			codes:  []int{-1, 40013, 41002, 41004, 48006, 40125},
		},
		{
			name: "APIQuota", api: APIQuotaGet, method: "POST", path: "/cgi-bin/openapi/quota/get",
			query:  url.Values{"access_token": {tToken}},
			body:   map[string]any{"cgi_path": "/cgi-bin/token"},
			answer: `{"errcode":0,"errmsg":"ok","quota":{"daily_limit":2000,"used":12,"remain":1988},"rate_limit":{"call_count":1,"refresh_second":1}}`,
			call:   func(ctx context.Context, c *Client) (any, error) { return c.APIQuota(ctx, tToken, "/cgi-bin/token") },
			want:   Quota{DailyLimit: 2000, Used: 12, Remain: 1988},
			codes:  []int{76021, 76022, 40001, 42001},
		},
		{
			name: "RidInfo", api: APIRidGet, method: "POST", path: "/cgi-bin/openapi/rid/get",
			query: url.Values{"access_token": {tToken}},
			body:  map[string]any{"rid": "6004f3da-1529ba72-5c345f67"},
			answer: `{"errcode":0,"errmsg":"ok","request":{"invoke_time":1635927956,"cost_in_ms":100,` +
				`"request_url":"access_token=x","request_body":"{}","response_body":"{\"errcode\":45009}","client_ip":"1.2.3.4"}}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				return c.RidInfo(ctx, tToken, "6004f3da-1529ba72-5c345f67")
			},
			want: RidInfo{InvokeTime: 1635927956, CostInMs: 100, RequestURL: "access_token=x", RequestBody: "{}",
				ResponseBody: `{"errcode":45009}`, ClientIP: "1.2.3.4"},
			codes: []int{76001, 76002, 76003, 76004, 76022, 40001},
		},
		{
			name: "Call", api: APIGeneric, method: "POST", path: "/cgi-bin/message/custom/send",
			query:  url.Values{"access_token": {tToken}},
			body:   map[string]any{"touser": "o1", "text": map[string]any{"content": "a<b&c"}},
			answer: `{"errcode":0,"errmsg":"ok","msgid":42}`,
			call: func(ctx context.Context, c *Client) (any, error) {
				var out struct {
					MsgID int `json:"msgid"`
				}
				body := map[string]any{"touser": "o1", "text": map[string]any{"content": "a<b&c"}}
				err := c.Call(ctx, "post", "/cgi-bin/message/custom/send", tToken, body, &out)
				return out.MsgID, err
			},
			want:  42,
			codes: []int{40001, 42001, 40014, 45047, 48001},
		},
	}
}

// checkRequest reports how r differs from what tc expects WeChat to receive.
func checkRequest(tc apiCase, prefix string, r *http.Request, body []byte) error {
	if r.Method != tc.method || r.URL.Path != prefix+tc.path {
		return fmt.Errorf("%s %s; want %s %s", r.Method, r.URL.Path, tc.method, prefix+tc.path)
	}
	if q := r.URL.Query(); !reflect.DeepEqual(q, tc.query) && !(len(q) == 0 && len(tc.query) == 0) {
		return fmt.Errorf("query %v; want %v", q, tc.query)
	}
	if tc.body == nil {
		if len(body) != 0 || len(r.TransferEncoding) != 0 || r.ContentLength > 0 || r.Header.Get("Content-Type") != "" {
			return fmt.Errorf("body %q (Transfer-Encoding %v, Content-Length %d); want none", body, r.TransferEncoding, r.ContentLength)
		}
		return nil
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("Content-Type %q; want application/json", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		return fmt.Errorf("body %s: %w", body, err)
	}
	if !reflect.DeepEqual(got, tc.body) {
		return fmt.Errorf("body %v; want %v", got, tc.body)
	}
	return nil
}

// authorizerPage is what AuthorizerList returns, as one value.
type authorizerPage struct {
	List  []AuthorizerEntry
	Total int
}

// newTestServer starts an httptest server for h, closed in t.Cleanup.
func newTestServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func newTestClient(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v) = %v", opts, err)
	}
	return c
}

// refusedURL is a loopback URL nothing listens on.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// unexpected is a fallback server that fails the test when called.
func unexpected(t *testing.T) *httptest.Server {
	return newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("fallback called: %s %s", r.Method, r.URL.Path)
		http.Error(w, "unexpected", http.StatusTeapot)
	})
}

func TestCallsSucceed(t *testing.T) {
	for _, prefix := range []string{"", "/wx/proxy"} {
		for _, tc := range apiCases() {
			t.Run(tc.name+prefix, func(t *testing.T) {
				srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
					body, _ := io.ReadAll(r.Body)
					if err := checkRequest(tc, prefix, r, body); err != nil {
						t.Errorf("WeChat received %v", err)
					}
					w.Header().Set("Content-Type", "application/json; encoding=utf-8")
					io.WriteString(w, tc.answer)
				})
				c := newTestClient(t, Options{BaseURL: srv.URL + prefix + "/", FallbackURLs: []string{unexpected(t).URL}})
				got, err := tc.call(t.Context(), c)
				if err != nil {
					t.Fatalf("%s = %v", tc.name, err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s = %#v; want %#v", tc.name, got, tc.want)
				}
			})
		}
	}
}

func TestCallsReturnAPIErrors(t *testing.T) {
	for _, tc := range apiCases() {
		for _, code := range tc.codes {
			t.Run(fmt.Sprintf("%s/%d", tc.name, code), func(t *testing.T) {
				srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
					body, _ := io.ReadAll(r.Body)
					// A hostile errmsg that echoes the whole request, secrets included.
					msg := fmt.Sprintf("failed for %s %s rid: 6004f3da-1529ba72-5c345f67", r.URL.RawQuery, body)
					json.NewEncoder(w).Encode(map[string]any{"errcode": code, "errmsg": msg})
				})
				c := newTestClient(t, Options{BaseURL: srv.URL, FallbackURLs: []string{unexpected(t).URL}})
				_, err := tc.call(t.Context(), c)
				var ae *APIError
				if !errors.As(err, &ae) {
					t.Fatalf("%s = %v; want *APIError", tc.name, err)
				}
				if ae.Code != code || ae.API != tc.api || ae.RID != "6004f3da-1529ba72-5c345f67" {
					t.Errorf("%s = %+v; want code %d, api %s, rid 6004f3da-1529ba72-5c345f67", tc.name, ae, code, tc.api)
				}
				if strings.Contains(ae.Msg, "rid:") {
					t.Errorf("APIError.Msg = %q; want the rid split off", ae.Msg)
				}
				if OutcomeUnknown(err) {
					t.Error("OutcomeUnknown(APIError) = true; want false")
				}
				assertNoSecret(t, err, allSecrets...)
			})
		}
	}
}

// hijackDrop closes the connection after reading the request, without an answer.
func hijackDrop(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	}
}

// stallServer answers only when the client gives up or the test ends.
func stallServer(t *testing.T) *httptest.Server {
	done := make(chan struct{})
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the server notices a closed connection only once the body is read
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
	t.Cleanup(func() { close(done) }) // runs before the server's Close (LIFO)
	return srv
}

// acceptAndClose is a TCP server that closes every connection at once,
// before reading a request.
func acceptAndClose(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return "http://" + l.Addr().String()
}

func TestTransportFaults(t *testing.T) {
	html := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(status)
			io.WriteString(w, "<html><body><h1>"+http.StatusText(status)+"</h1></body></html>")
		}
	}
	text := func(s string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) }
	}
	tests := []struct {
		name        string
		base        func(t *testing.T) string
		timeout     time.Duration
		wantKind    TransportKind
		wantStatus  int
		wantUnknown *bool // nil: either (the client cannot tell)
		wantIs      error
	}{
		{"502 HTML", func(t *testing.T) string { return newTestServer(t, html(502)).URL }, 0, KindStatus, 502, ptr(true), nil},
		{"503", func(t *testing.T) string { return newTestServer(t, html(503)).URL }, 0, KindStatus, 503, ptr(true), nil},
		{"404 from a proxy", func(t *testing.T) string { return newTestServer(t, html(404)).URL }, 0, KindStatus, 404, ptr(false), nil},
		{"redirect not followed", func(t *testing.T) string {
			return newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://evil.example/steal?"+r.URL.RawQuery, http.StatusFound)
			}).URL
		}, 0, KindStatus, 302, ptr(false), nil},
		{"200 HTML", func(t *testing.T) string { return newTestServer(t, html(200)).URL }, 0, KindHTML, 0, ptr(true), nil},
		{"invalid JSON", func(t *testing.T) string { return newTestServer(t, text(`{"access_token":`)).URL }, 0, KindInvalidJSON, 0, ptr(true), nil},
		{"success without token", func(t *testing.T) string { return newTestServer(t, text(`{"expires_in":7200}`)).URL }, 0, KindInvalidJSON, 0, ptr(true), nil},
		{"absurd expires_in", func(t *testing.T) string {
			return newTestServer(t, text(`{"access_token":"x","expires_in":99999999999}`)).URL
		}, 0, KindInvalidJSON, 0, ptr(true), nil},
		{"body over 1 MiB", func(t *testing.T) string {
			return newTestServer(t, text(`{"access_token":"`+strings.Repeat("a", maxBody)+`"}`)).URL
		}, 0, KindInvalidJSON, 0, ptr(true), nil},
		{"timeout after send", func(t *testing.T) string { return stallServer(t).URL }, 100 * time.Millisecond, KindTimeout, 0, ptr(true), context.DeadlineExceeded},
		{"dropped after send", func(t *testing.T) string { return newTestServer(t, hijackDrop(t)).URL }, 0, KindConnection, 0, ptr(true), nil},
		{"closed before reading", acceptAndClose, 0, KindConnection, 0, nil, nil},
		{"connection refused", refusedURL, 0, KindConnection, 0, ptr(false), nil},
	}
	calls := []struct {
		name string
		call func(ctx context.Context, c *Client) error
	}{
		{"GET token", func(ctx context.Context, c *Client) error { _, err := c.Token(ctx, tAppID, tSecret); return err }},
		{"POST stable_token", func(ctx context.Context, c *Client) error {
			_, err := c.StableToken(ctx, tAppID, tSecret, false)
			return err
		}},
	}
	for _, tt := range tests {
		for _, call := range calls {
			t.Run(tt.name+"/"+call.name, func(t *testing.T) {
				c := newTestClient(t, Options{BaseURL: tt.base(t), Timeout: tt.timeout})
				err := call.call(t.Context(), c)
				var te *TransportError
				if !errors.As(err, &te) {
					t.Fatalf("call = %v; want *TransportError", err)
				}
				if te.Kind != tt.wantKind || te.StatusCode != tt.wantStatus {
					t.Errorf("call = %v (kind %v, status %d); want kind %v, status %d", err, te.Kind, te.StatusCode, tt.wantKind, tt.wantStatus)
				}
				if tt.wantUnknown != nil && te.OutcomeUnknown() != *tt.wantUnknown {
					t.Errorf("OutcomeUnknown(%v) = %v; want %v", err, te.OutcomeUnknown(), *tt.wantUnknown)
				}
				if OutcomeUnknown(err) != te.OutcomeUnknown() {
					t.Error("OutcomeUnknown(err) disagrees with the method")
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("errors.Is(%v, %v) = false", err, tt.wantIs)
				}
				if !strings.Contains(err.Error(), "wechat: "+te.API+": ") {
					t.Errorf("Error() = %q; want the API named", err)
				}
				assertNoSecret(t, err, allSecrets...)
			})
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestContextDeadlineBoundsAttempt(t *testing.T) {
	srv := stallServer(t)
	c := newTestClient(t, Options{BaseURL: srv.URL, Timeout: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Token(ctx, tAppID, tSecret)
	var te *TransportError
	if !errors.As(err, &te) || te.Kind != KindTimeout || !te.OutcomeUnknown() {
		t.Fatalf("Token with a 100ms ctx = %v; want an outcome-unknown timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Token took %v; the ctx deadline should bound it", d)
	}
}

func TestContextCanceled(t *testing.T) {
	started := make(chan struct{})
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})
	fallback := unexpected(t)
	c := newTestClient(t, Options{BaseURL: srv.URL, FallbackURLs: []string{fallback.URL}})
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-started; cancel() }()
	_, err := c.Token(ctx, tAppID, tSecret)
	var te *TransportError
	if !errors.As(err, &te) || te.Kind != KindConnection || !errors.Is(err, context.Canceled) || !te.OutcomeUnknown() {
		t.Fatalf("Token canceled after send = %v; want an outcome-unknown connection error wrapping context.Canceled", err)
	}
}

// recorder counts the calls a server receives.
type recorder struct {
	n   atomic.Int32
	srv *httptest.Server
}

func record(t *testing.T, h http.HandlerFunc) *recorder {
	r := &recorder{}
	r.srv = newTestServer(t, func(w http.ResponseWriter, req *http.Request) {
		r.n.Add(1)
		h(w, req)
	})
	return r
}

func TestFallback(t *testing.T) {
	ok := func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"access_token":"FB","expires_in":7200,"openid":"o","session_key":"k"}`)
	}
	bad := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}

	t.Run("used on transport failure", func(t *testing.T) {
		primary, fb := record(t, bad), record(t, ok)
		c := newTestClient(t, Options{BaseURL: primary.srv.URL, FallbackURLs: []string{fb.srv.URL}})
		tok, err := c.Token(t.Context(), tAppID, tSecret)
		if err != nil || tok.AccessToken != "FB" || primary.n.Load() != 1 || fb.n.Load() != 1 {
			t.Fatalf("Token = %+v, %v (primary %d, fallback %d calls); want the fallback's token", tok, err, primary.n.Load(), fb.n.Load())
		}
	})
	t.Run("tried in order", func(t *testing.T) {
		var order []string
		var mu sync.Mutex
		mark := func(name string, h http.HandlerFunc) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				h(w, r)
			}
		}
		a, b, c3 := newTestServer(t, mark("a", bad)), newTestServer(t, mark("b", bad)), newTestServer(t, mark("c", ok))
		c := newTestClient(t, Options{BaseURL: a.URL, FallbackURLs: []string{b.URL, c3.URL}})
		if _, err := c.Token(t.Context(), tAppID, tSecret); err != nil {
			t.Fatal(err)
		}
		if strings.Join(order, ",") != "a,b,c" {
			t.Errorf("servers called in order %v; want a,b,c", order)
		}
	})
	t.Run("not used on errcode", func(t *testing.T) {
		primary := record(t, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"errcode":-1,"errmsg":"system error rid: 1"}`)
		})
		c := newTestClient(t, Options{BaseURL: primary.srv.URL, FallbackURLs: []string{unexpected(t).URL}})
		_, err := c.Token(t.Context(), tAppID, tSecret)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != -1 {
			t.Fatalf("Token = %v; want errcode -1 from the primary", err)
		}
	})
	t.Run("single-use code not resent after an unknown outcome", func(t *testing.T) {
		primary := record(t, hijackDrop(t))
		c := newTestClient(t, Options{BaseURL: primary.srv.URL, FallbackURLs: []string{unexpected(t).URL}})
		_, err := c.Code2Session(t.Context(), tAppID, tSecret, tCode)
		if !OutcomeUnknown(err) {
			t.Fatalf("Code2Session = %v; want an outcome-unknown transport error", err)
		}
		assertNoSecret(t, err, allSecrets...)
	})
	t.Run("single-use code sent to fallback when the primary is unreachable", func(t *testing.T) {
		fb := record(t, ok)
		c := newTestClient(t, Options{BaseURL: refusedURL(t), FallbackURLs: []string{fb.srv.URL}})
		s, err := c.Code2Session(t.Context(), tAppID, tSecret, tCode)
		if err != nil || s.OpenID != "o" || fb.n.Load() != 1 {
			t.Fatalf("Code2Session = %+v, %v; want the fallback's answer", s, err)
		}
	})
	t.Run("unknown outcome of an earlier attempt survives", func(t *testing.T) {
		primary := record(t, hijackDrop(t))
		c := newTestClient(t, Options{BaseURL: primary.srv.URL, FallbackURLs: []string{refusedURL(t)}})
		_, err := c.Token(t.Context(), tAppID, tSecret)
		var te *TransportError
		if !errors.As(err, &te) || te.Kind != KindConnection {
			t.Fatalf("Token = %v; want a connection error", err)
		}
		if !te.OutcomeUnknown() {
			t.Errorf("OutcomeUnknown = false; want true: the primary may have minted a token")
		}
		if !strings.Contains(err.Error(), "earlier attempt") {
			t.Errorf("Error() = %q; want the earlier attempt described", err)
		}
		assertNoSecret(t, err, allSecrets...)
	})
	t.Run("all unreachable is a certain failure", func(t *testing.T) {
		c := newTestClient(t, Options{BaseURL: refusedURL(t), FallbackURLs: []string{refusedURL(t)}})
		_, err := c.Token(t.Context(), tAppID, tSecret)
		if err == nil || OutcomeUnknown(err) {
			t.Fatalf("Token = %v; want a certain failure", err)
		}
		assertNoSecret(t, err, allSecrets...)
	})
}

// TestErrorsLeakNoSecret runs every call against every failure mode and
// checks that no secret reaches an error.
func TestErrorsLeakNoSecret(t *testing.T) {
	modes := map[string]func(t *testing.T) string{
		"refused": refusedURL,
		"dropped": func(t *testing.T) string { return newTestServer(t, hijackDrop(t)).URL },
		"timeout": func(t *testing.T) string { return stallServer(t).URL },
		"502": func(t *testing.T) string {
			return newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "<html>"+r.URL.RawQuery+"</html>", http.StatusBadGateway)
			}).URL
		},
		"garbled echo": func(t *testing.T) string {
			return newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				io.WriteString(w, `{"echo":"`+r.URL.RawQuery+string(body))
			}).URL
		},
	}
	for name, mode := range modes {
		for _, tc := range apiCases() {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				c := newTestClient(t, Options{BaseURL: mode(t), FallbackURLs: []string{refusedURL(t)}, Timeout: 50 * time.Millisecond})
				_, err := tc.call(t.Context(), c)
				if err == nil {
					t.Fatal("call succeeded; want an error")
				}
				assertNoSecret(t, err, allSecrets...)
			})
		}
	}
}

func TestRedactURL(t *testing.T) {
	raw := "https://user:pw@api.weixin.qq.com/sns/jscode2session?appid=wx1&secret=S&js_code=C&grant_type=authorization_code" +
		"&access_token=A&code=C2&refresh_token=R&component_access_token=CT&appsecret=AS&signature=SIG#frag"
	got := redactURL(raw)
	u, err := url.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for _, k := range []string{"secret", "js_code", "access_token", "code", "refresh_token", "component_access_token", "appsecret", "signature"} {
		if q.Get(k) != "REDACTED" {
			t.Errorf("redactURL: %s = %q; want REDACTED", k, q.Get(k))
		}
	}
	if q.Get("appid") != "wx1" || q.Get("grant_type") != "authorization_code" {
		t.Errorf("redactURL(%q) = %q; want appid and grant_type kept", raw, got)
	}
	if strings.Contains(got, "pw") || strings.Contains(got, "frag") {
		t.Errorf("redactURL(%q) = %q; want password and fragment gone", raw, got)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"zero", Options{}, true},
		{"prefix", Options{BaseURL: "http://127.0.0.1:1/wx/"}, true},
		{"fallbacks", Options{FallbackURLs: []string{"https://api2.weixin.qq.com"}}, true},
		{"relative", Options{BaseURL: "api.weixin.qq.com"}, false},
		{"ftp", Options{BaseURL: "ftp://api.weixin.qq.com"}, false},
		{"query", Options{BaseURL: "https://api.weixin.qq.com?secret=x"}, false},
		{"bad fallback", Options{FallbackURLs: []string{"://"}}, false},
		{"negative timeout", Options{Timeout: -time.Second}, false},
	}
	for _, tt := range tests {
		c, err := New(tt.opts)
		if (err == nil) != tt.ok || (err == nil) != (c != nil) {
			t.Errorf("New(%s) = %v, %v; want ok=%v", tt.name, c, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "secret=x") {
			t.Errorf("New(%s) error quotes the URL: %v", tt.name, err)
		}
	}
	// The caller's http.Client keeps its redirect policy.
	hc := &http.Client{}
	if _, err := New(Options{HTTPClient: hc}); err != nil || hc.CheckRedirect != nil {
		t.Errorf("New changed the caller's http.Client (CheckRedirect set: %v)", hc.CheckRedirect != nil)
	}
}

func TestCallRejectsNonPointerOut(t *testing.T) {
	c := newTestClient(t, Options{BaseURL: unexpected(t).URL})
	var out struct{}
	if err := c.Call(t.Context(), "GET", "/cgi-bin/x", tToken, nil, out); err == nil {
		t.Fatal("Call(out by value) = nil; want an error")
	}
}

func TestCallKeepsPathQuery(t *testing.T) {
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("next_openid") != "o9" || r.URL.Query().Get("access_token") != tToken || r.Method != "GET" {
			t.Errorf("WeChat received %s %s", r.Method, r.URL)
		}
		io.WriteString(w, `{"total":1}`)
	})
	c := newTestClient(t, Options{BaseURL: srv.URL})
	var out struct{ Total int }
	if err := c.Call(t.Context(), "", "/cgi-bin/user/get?next_openid=o9", tToken, nil, &out); err != nil || out.Total != 1 {
		t.Fatalf("Call = %v, %+v", err, out)
	}
}

func TestNoHiddenReplay(t *testing.T) {
	var n atomic.Int32
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			io.WriteString(w, `{"access_token":"AT","expires_in":7200,"openid":"o","session_key":"k"}`)
			return
		}
		hijackDrop(t)(w, r)
	})
	c := newTestClient(t, Options{BaseURL: srv.URL})
	if _, err := c.Token(t.Context(), tAppID, tSecret); err != nil {
		t.Fatal(err)
	}
	_, err := c.Token(t.Context(), tAppID, tSecret) // same keep-alive connection, dropped after the request
	if !OutcomeUnknown(err) || n.Load() != 2 {
		t.Fatalf("Token = %v after %d requests; want an outcome-unknown error after exactly 2", err, n.Load())
	}
}
