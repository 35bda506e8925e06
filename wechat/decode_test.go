package wechat

import (
	"errors"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	type answer struct {
		AccessToken string  `json:"access_token"`
		ExpiresIn   flexInt `json:"expires_in"`
	}
	tests := []struct {
		name     string
		body     string
		wantCode int           // APIError code, 0: none
		wantKind TransportKind // 0: none
		wantTok  string
	}{
		{"token success without errcode", `{"access_token":"T","expires_in":7200}`, 0, 0, "T"},
		{"errcode 0 is success", `{"errcode":0,"errmsg":"ok","access_token":"T","expires_in":7200}`, 0, 0, "T"},
		{"errcode null is success", `{"errcode":null,"access_token":"T"}`, 0, 0, "T"},
		{"errcode as string", `{"errcode":"40001","errmsg":"invalid credential"}`, 40001, 0, ""},
		{"errcode as integral float", `{"errcode":45009.0,"errmsg":"quota"}`, 45009, 0, ""},
		{"negative errcode", `{"errcode":-1,"errmsg":"system error"}`, -1, 0, ""},
		{"errmsg not a string", `{"errcode":40013,"errmsg":123}`, 40013, 0, ""},
		{"BOM and whitespace", "\xef\xbb\xbf \n{\"access_token\":\"T\"}\n", 0, 0, "T"},
		{"expires_in as string", `{"access_token":"T","expires_in":"7200"}`, 0, 0, "T"},
		{"empty", ``, 0, KindInvalidJSON, ""},
		{"html", `<html><body>502 Bad Gateway</body></html>`, 0, KindHTML, ""},
		{"array", `[1,2]`, 0, KindInvalidJSON, ""},
		{"null", `null`, 0, KindInvalidJSON, ""},
		{"truncated", `{"access_token":"T`, 0, KindInvalidJSON, ""},
		{"fractional errcode", `{"errcode":1.5}`, 0, KindInvalidJSON, ""},
		{"huge errcode", `{"errcode":1e300}`, 0, KindInvalidJSON, ""},
		{"errcode object", `{"errcode":{}}`, 0, KindInvalidJSON, ""},
		{"wrong field type", `{"access_token":5}`, 0, KindInvalidJSON, ""},
		{"expires_in not a number", `{"access_token":"T","expires_in":"soon"}`, 0, KindInvalidJSON, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a answer
			err := decode(APIToken, []byte(tt.body), &a)
			var ae *APIError
			var te *TransportError
			switch {
			case tt.wantCode != 0:
				if !errors.As(err, &ae) || ae.Code != tt.wantCode || ae.API != APIToken {
					t.Fatalf("decode(%q) = %v; want errcode %d", tt.body, err, tt.wantCode)
				}
			case tt.wantKind != 0:
				if !errors.As(err, &te) || te.Kind != tt.wantKind {
					t.Fatalf("decode(%q) = %v; want %v", tt.body, err, tt.wantKind)
				}
				if !te.OutcomeUnknown() {
					t.Errorf("decode(%q): OutcomeUnknown = false; want true for a garbled answer", tt.body)
				}
			default:
				if err != nil || a.AccessToken != tt.wantTok {
					t.Fatalf("decode(%q) = %v, token %q; want nil, %q", tt.body, err, a.AccessToken, tt.wantTok)
				}
			}
		})
	}
}

func TestDecodeNeverQuotesBody(t *testing.T) {
	const secret = "SECRET-TOKEN-abcdef"
	bodies := []string{
		`{"access_token":"` + secret + `","expires_in":"` + secret + `"}`,
		`{"access_token":"` + secret,
		`{"access_token":` + secret + `}`,
	}
	for _, b := range bodies {
		var a struct {
			AccessToken string  `json:"access_token"`
			ExpiresIn   flexInt `json:"expires_in"`
		}
		err := decode(APIToken, []byte(b), &a)
		if err == nil {
			t.Fatalf("decode(%q) = nil; want an error", b)
		}
		assertNoSecret(t, err, secret)
	}
}

func TestSplitRID(t *testing.T) {
	tests := []struct{ in, msg, rid string }{
		{"invalid credential, access_token is invalid or not latest rid: 6004f3da-1529ba72-5c345f67",
			"invalid credential, access_token is invalid or not latest", "6004f3da-1529ba72-5c345f67"},
		{"invalid appsecret, view more at http://t.cn/RAEkdVq rid: 64a1-2b", "invalid appsecret, view more at http://t.cn/RAEkdVq", "64a1-2b"},
		{"invalid code, rid: abc", "invalid code", "abc"},
		{"invalid code, hint: [xyz]", "invalid code, hint: [xyz]", ""},
		{"grid: 5", "grid: 5", ""},
		{"rid:", "rid:", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		msg, rid := splitRID(tt.in)
		if msg != tt.msg || rid != tt.rid {
			t.Errorf("splitRID(%q) = %q, %q; want %q, %q", tt.in, msg, rid, tt.msg, tt.rid)
		}
	}
}

func TestCountryCodeLenient(t *testing.T) {
	for _, body := range []string{
		`{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"wx1"}}}`,
		`{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":"1637744274","appid":"wx1"}}}`,
	} {
		var a struct {
			PhoneInfo struct {
				CountryCode flexString `json:"countryCode"`
				Watermark   struct {
					Timestamp flexInt `json:"timestamp"`
				} `json:"watermark"`
			} `json:"phone_info"`
		}
		if err := decode(APIPhoneNumber, []byte(body), &a); err != nil {
			t.Fatalf("decode(%s) = %v", body, err)
		}
		if a.PhoneInfo.CountryCode != "86" || a.PhoneInfo.Watermark.Timestamp != 1637744274 {
			t.Errorf("decode(%s) = %+v; want countryCode 86", body, a)
		}
	}
}

func TestLifetime(t *testing.T) {
	tests := []struct {
		secs flexInt
		want time.Duration
		ok   bool
	}{
		{7200, 2 * time.Hour, true},
		{1, time.Second, true},
		{0, 0, false},
		{-5, 0, false},
		{1 << 62, 0, false},
	}
	for _, tt := range tests {
		got, err := lifetime(tt.secs)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("lifetime(%d) = %v, %v; want %v, ok=%v", tt.secs, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzDecode checks that the decoder never panics and always answers with
// nil, an *APIError with a non-zero code, or a *TransportError.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"ACCESS_TOKEN","expires_in":7200}`,
		`{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: 6004f3da-1529ba72-5c345f67"}`,
		`{"errcode":0,"errmsg":"ok","ticket":"T","expires_in":7200}`,
		`{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"+8613800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"wx1"}}}`,
		`{"openid":"o","session_key":"k","unionid":"u","errcode":0}`,
		`{"errcode":"45009","errmsg":null}`,
		`{"errcode":1e400}`,
		`{"errcode":-1}`,
		`{"quota":{"daily_limit":2000,"used":3,"remain":1997}}`,
		`{"request":{"invoke_time":1,"cost_in_ms":2,"request_url":"a","client_ip":"1.2.3.4"}}`,
		`<html>bad gateway</html>`,
		"\xef\xbb\xbf{}",
		`[]`, `null`, `"x"`, `{`, ``, `{"errmsg":"rid: rid: rid:"}`,
		"{\"errcode\":40013,\"errmsg\":\"\\u0000\\n\\t\\xff rid: \xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		outs := []any{
			nil,
			&tokenAnswer{},
			&oauthAnswer{},
			&map[string]any{},
			&struct {
				PhoneInfo *struct {
					CountryCode flexString `json:"countryCode"`
					Watermark   struct {
						Timestamp flexInt `json:"timestamp"`
					} `json:"watermark"`
				} `json:"phone_info"`
			}{},
		}
		for _, out := range outs {
			err := decode(APIGeneric, body, out)
			if err == nil {
				continue
			}
			var ae *APIError
			var te *TransportError
			switch {
			case errors.As(err, &ae):
				if ae.Code == 0 {
					t.Fatalf("decode(%q) = APIError with code 0", body)
				}
				_ = ae.Error()
				_ = ae.Hint()
			case errors.As(err, &te):
				_ = te.Error()
				_ = te.OutcomeUnknown()
			default:
				t.Fatalf("decode(%q) = %T %v; want *APIError or *TransportError", body, err, err)
			}
		}
		if a := (&tokenAnswer{}); decode(APIToken, body, a) == nil {
			_, _ = a.token()
		}
	})
}
