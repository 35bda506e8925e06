package msgcrypt

import (
	"errors"
	"strings"
	"testing"
)

// WeChat's published sample vectors. They come from the samples WeChat
// ships with WXBizMsgCrypt, in three independent sets:
//
//   - mpJava: the official-account sample "cryptoDemo" (Java,
//     com/qq/weixin/mp/aes/WXBizMsgCryptTest.java: testAesEncrypt and
//     testAesEncrypt2), downloadable from
//     https://wximg.gtimg.com/shake_tv/mpwiki/cryptoDemo.zip and carried
//     unchanged by WxJava's WxCryptUtilTest
//     (weixin-java-common/src/test/java/me/chanjar/weixin/common/util/crypto);
//     encryption with the fixed random prefix "aaaabbbbccccdddd".
//   - mpPython: the same demo's Python Sample.py (token "spamtest",
//     AppID wx2c2769f8efd9abc2): a signed push to decrypt.
//   - wecom: the WeCom (企业微信) sample Sample.cs/Sample.cpp
//     (token "QDG6eK", CorpID wx5823bf96d3bd56c7): a signed push to
//     decrypt; WeCom uses the same scheme with the CorpID at the tail.
const (
	mpJavaKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	mpJavaToken  = "pamtest"
	mpJavaAppID  = "wxb11529c136998cb6"
	mpJavaRandom = "aaaabbbbccccdddd"
	mpJavaMsg1   = "我是中文abcd123"
	mpJavaEnc1   = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
	mpJavaMsg2   = "<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName><FromUserName><![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime><MsgType><![CDATA[video]]></MsgType><Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxqdUkjm6Gs2Ed1KF3ulAOA9H1xG0]]></MediaId><Title><![CDATA[testCallBackReplyVideo]]></Title><Description><![CDATA[testCallBackReplyVideo]]></Description></Video></xml>"
	mpJavaEnc2   = "jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweImX9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/slTwo4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERspKA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQDajPkdPrEeOwofJb"

	mpPyToken = "spamtest"
	mpPyAppID = "wx2c2769f8efd9abc2"
	mpPySig   = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
	mpPyTS    = "1409735669"
	mpPyNonce = "1320562132"
	mpPyBody  = "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId><Encrypt><![CDATA[hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=]]></Encrypt></xml>"

	wecomToken = "QDG6eK"
	wecomKey   = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	wecomCorp  = "wx5823bf96d3bd56c7"
	wecomSig   = "477715d11cdb4164915debcba66cb864d751f3e6"
	wecomTS    = "1409659813"
	wecomNonce = "1372623149"
	wecomBody  = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==]]></Encrypt></xml>"
)

func mustNew(t *testing.T, token, key, appID string) *Crypter {
	t.Helper()
	c, err := New(token, key, appID)
	if err != nil {
		t.Fatalf("New(%q, key, %q) = %v", token, appID, err)
	}
	return c
}

func TestSampleVectorsEncrypt(t *testing.T) {
	c := mustNew(t, mpJavaToken, mpJavaKey, mpJavaAppID)
	for _, tc := range []struct{ name, msg, want string }{
		{"testAesEncrypt", mpJavaMsg1, mpJavaEnc1},
		{"testAesEncrypt2", mpJavaMsg2, mpJavaEnc2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.encrypt([16]byte([]byte(mpJavaRandom)), []byte(tc.msg))
			if err != nil || got != tc.want {
				t.Fatalf("encrypt = %q, %v; want %q", got, err, tc.want)
			}
			msg, err := c.Decrypt(tc.want)
			if err != nil || string(msg) != tc.msg {
				t.Fatalf("Decrypt(sample) = %q, %v; want %q", msg, err, tc.msg)
			}
		})
	}
}

func TestSampleVectorsOpen(t *testing.T) {
	for _, tc := range []struct {
		name, token, key, appID, sig, ts, nonce, body string
		want                                          []string // substrings of the plaintext
	}{
		{"mp python", mpPyToken, mpJavaKey, mpPyAppID, mpPySig, mpPyTS, mpPyNonce, mpPyBody,
			[]string{"<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>", "<Content><![CDATA[abcdteT]]></Content>", "<MsgId>6054768590064713728</MsgId>"}},
		{"wecom", wecomToken, wecomKey, wecomCorp, wecomSig, wecomTS, wecomNonce, wecomBody,
			[]string{"<ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>", "<CreateTime>1409659813</CreateTime>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, tc.token, tc.key, tc.appID)
			msg, err := c.Open(tc.sig, tc.ts, tc.nonce, []byte(tc.body))
			if err != nil {
				t.Fatalf("Open(sample) = %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(msg), w) {
					t.Errorf("Open(sample) = %q; want it to contain %q", msg, w)
				}
			}
			// The same push with one byte of the signature changed, to another
			// AppID, or checked with another token.
			bad := []byte(tc.sig)
			bad[0] ^= 1
			if _, err := c.Open(string(bad), tc.ts, tc.nonce, []byte(tc.body)); !errors.Is(err, ErrSignature) {
				t.Errorf("Open(altered signature) = %v; want ErrSignature", err)
			}
			if _, err := c.Open(tc.sig, tc.ts+"0", tc.nonce, []byte(tc.body)); !errors.Is(err, ErrSignature) {
				t.Errorf("Open(altered timestamp) = %v; want ErrSignature", err)
			}
			other := mustNew(t, tc.token, tc.key, "wx0000000000000000")
			if _, err := other.Open(tc.sig, tc.ts, tc.nonce, []byte(tc.body)); !errors.Is(err, ErrAppID) {
				t.Errorf("Open(for another appid) = %v; want ErrAppID", err)
			}
			wrongToken := mustNew(t, tc.token+"x", tc.key, tc.appID)
			if _, err := wrongToken.Open(tc.sig, tc.ts, tc.nonce, []byte(tc.body)); !errors.Is(err, ErrSignature) {
				t.Errorf("Open(wrong token) = %v; want ErrSignature", err)
			}
		})
	}
}
