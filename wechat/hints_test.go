package wechat

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHintsCoverDocumentedCodes(t *testing.T) {
	// WeChat's global return codes these APIs answer, plus the login guide's
	// troubleshooting table.
	documented := []int{
		-1, 0, 40001, 40002, 40013, 40014, 40029, 40030, 40125, 40163, 40164, 40226, 40243,
		41001, 41002, 41004, 42001, 42002, 42003, 42007, 45009, 45011, 45047, 48001, 48006,
		50001, 50002, 61003, 61004, 61005, 61006, 61009, 61010, 61023, 61024, 76001, 76002, 76003, 76004, 76022,
		87009, 89501, 89503, 89506, 89507,
	}
	for _, code := range documented {
		h, ok := Explain(code)
		if !ok {
			t.Errorf("Explain(%d): unknown; want a hint", code)
			continue
		}
		if h.Code != code {
			t.Errorf("Explain(%d).Code = %d", code, h.Code)
		}
		for name, v := range map[string]string{
			"Title": h.Title, "ZH": h.ZH, "EN": h.EN, "CauseZH": h.CauseZH, "CauseEN": h.CauseEN, "FixZH": h.FixZH, "FixEN": h.FixEN,
		} {
			if strings.TrimSpace(v) == "" {
				t.Errorf("Explain(%d).%s is empty", code, name)
			}
		}
		if !hasHan(h.ZH) || !hasHan(h.FixZH) || hasHan(h.EN) || hasHan(h.FixEN) {
			t.Errorf("Explain(%d): ZH fields must be Chinese and EN fields English", code)
		}
	}
	codes := KnownCodes()
	if !slices.IsSorted(codes) || len(slices.Compact(slices.Clone(codes))) != len(codes) {
		t.Errorf("KnownCodes() = %v; want strictly ascending", codes)
	}
	codes[0] = 12345 // a fresh copy: callers cannot corrupt the table
	if KnownCodes()[0] == 12345 {
		t.Error("KnownCodes returned the package's own slice")
	}
	if h, ok := Explain(99999); ok || h.Code != 99999 || h.FixEN == "" {
		t.Errorf("Explain(99999) = %+v, %v; want a generic hint, false", h, ok)
	}
}

func hasHan(s string) bool {
	for _, r := range s {
		if r >= 0x4e00 && r <= 0x9fff {
			return true
		}
	}
	return false
}

func TestAPIErrorClassification(t *testing.T) {
	type class struct{ cred, retry, config, quota, relogin, reauth bool }
	tests := []struct {
		api  string
		code int
		want class
	}{
		{APIGeneric, 40001, class{cred: true}},
		{APIGetTicket, 40001, class{cred: true}},
		{"", 40001, class{cred: true}},
		{APIToken, 40001, class{config: true}},
		{APIStableToken, 40001, class{config: true}},
		{APIGeneric, 42001, class{cred: true}},
		{APIGeneric, 40014, class{cred: true}},
		{APIJSCode2Session, -1, class{retry: true}},
		{APIJSCode2Session, 45011, class{retry: true}},
		{APIStableToken, 45009, class{quota: true}},
		{APIToken, 40013, class{config: true}},
		{APIToken, 40125, class{config: true}},
		{APIToken, 40164, class{config: true}},
		{APIComponentToken, 61004, class{config: true}},
		{APIToken, 40243, class{config: true}},
		{APIToken, 40002, class{config: true}},
		{APIToken, 41002, class{config: true}},
		{APIToken, 41004, class{config: true}},
		{APIToken, 89501, class{config: true}},
		{APIToken, 89503, class{config: true}},
		{APIToken, 89506, class{config: true}},
		{APIToken, 89507, class{config: true}},
		{APIGeneric, 48001, class{config: true}},
		{APIToken, 61024, class{config: true}},
		{APIJSCode2Session, 40029, class{relogin: true}},
		{APIJSCode2Session, 40163, class{relogin: true}},
		{APIJSCode2Session, 40226, class{relogin: true}},
		{APIOAuthRefreshToken, 40030, class{relogin: true}},
		{APIOAuthRefreshToken, 42002, class{relogin: true}},
		{APIOAuthAccessToken, 42003, class{relogin: true}},
		{APIUserInfo, 42007, class{relogin: true}},
		{APICheckSession, 87009, class{relogin: true}},
		{APIGeneric, 45047, class{}},
		{APIAuthorizerToken, 61023, class{reauth: true}},
		{APIAuthorizerToken, 61003, class{reauth: true}},
		{APIQueryAuth, 61009, class{reauth: true}},
		{APIQueryAuth, 61010, class{reauth: true}},
		{APIStartPushTicket, 40001, class{config: true}},
		{APICreatePreAuthCode, 40001, class{cred: true}},
	}
	for _, tt := range tests {
		e := &APIError{API: tt.api, Code: tt.code}
		got := class{e.InvalidCredential(), e.Retryable(), e.ConfigError(), e.QuotaExceeded(), e.Relogin(), e.Reauthorize()}
		if got != tt.want {
			t.Errorf("APIError{%s, %d} classes = %+v; want %+v", tt.api, tt.code, got, tt.want)
		}
		wantBackoff := time.Duration(0)
		if tt.code == 45011 {
			wantBackoff = time.Minute
		}
		if e.MinBackoff() != wantBackoff {
			t.Errorf("APIError{%d}.MinBackoff() = %v; want %v", tt.code, e.MinBackoff(), wantBackoff)
		}
		if e.Hint().Code != tt.code {
			t.Errorf("APIError{%d}.Hint().Code = %d", tt.code, e.Hint().Code)
		}
	}
}

// TestTokenRejected pins the module's one list of token-rejected errcodes:
// exactly the codes InvalidCredential accepts on a token-checked call.
func TestTokenRejected(t *testing.T) {
	for _, code := range []int{40001, 42001, 40014} {
		if !TokenRejected(code) {
			t.Errorf("TokenRejected(%d) = false; want true", code)
		}
	}
	for _, h := range hints {
		e := &APIError{API: APIGeneric, Code: h.Code}
		if TokenRejected(h.Code) != e.InvalidCredential() {
			t.Errorf("TokenRejected(%d) = %v but InvalidCredential on a token-checked call = %v",
				h.Code, TokenRejected(h.Code), e.InvalidCredential())
		}
	}
	for _, code := range []int{0, -1, 40013, 40029, 42002, 45011} {
		if TokenRejected(code) {
			t.Errorf("TokenRejected(%d) = true; want false", code)
		}
	}
}
