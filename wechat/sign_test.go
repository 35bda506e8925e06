package wechat

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
)

// The official sample of the mini-program "encrypted data" documentation.
const (
	sampleAppID      = "wx4f4bc4dec97d474b"
	sampleSessionKey = "tiihtNczf5v6AKRyjwEUhQ=="
	sampleIV         = "r7BXXKkLb8qrSNn05n0qiA=="
	sampleEncrypted  = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew=="
)

func TestJSAPISignatureOfficialSamples(t *testing.T) {
	const (
		ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
		nonce  = "Wm3WZYTPz0wzccnW"
		ts     = 1414587457
	)
	tests := []struct{ url, want string }{
		{"http://mp.weixin.qq.com", "f4d90daf4b3bca3078ab155816175ba34c443a7b"},
		{"http://mp.weixin.qq.com?params=value", "0f9de62fce790f9a083d5c99e95740ceb90c27ed"},
		{"http://mp.weixin.qq.com?params=value#section", "0f9de62fce790f9a083d5c99e95740ceb90c27ed"},
		{"http://mp.weixin.qq.com#", "f4d90daf4b3bca3078ab155816175ba34c443a7b"},
	}
	for _, tt := range tests {
		if got := JSAPISignature(ticket, nonce, ts, tt.url); got != tt.want {
			t.Errorf("JSAPISignature(…, %q) = %s; want %s", tt.url, got, tt.want)
		}
	}
}

func TestSessionSignatureOfficialSample(t *testing.T) {
	const want = "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b"
	if got := SessionSignature("o0q0otL8aEzpcZL/FT9WsQ==", `{"foo":"bar"}`); got != want {
		t.Errorf("SessionSignature(sample) = %s; want %s", got, want)
	}
}

func TestDecryptUserDataOfficialSample(t *testing.T) {
	plain, err := DecryptUserData(sampleAppID, sampleSessionKey, sampleEncrypted, sampleIV)
	if err != nil {
		t.Fatalf("DecryptUserData(official sample) = %v", err)
	}
	var doc struct {
		OpenID    string `json:"openId"`
		UnionID   string `json:"unionId"`
		Watermark struct {
			Timestamp int64  `json:"timestamp"`
			AppID     string `json:"appid"`
		} `json:"watermark"`
	}
	if err := json.Unmarshal(plain, &doc); err != nil {
		t.Fatalf("plaintext is not JSON: %v", err)
	}
	if doc.OpenID != "oGZUI0egBJY1zhBYw2KhdUfwVJJE" || doc.UnionID != "ocMvos6NjeKLIBqg5Mr9QjxrP1FA" ||
		doc.Watermark.Timestamp != 1477314187 || doc.Watermark.AppID != sampleAppID {
		t.Errorf("decrypted sample = %+v; want the official openId, unionId and watermark", doc)
	}
	if _, err := DecryptUserData("wx0000000000000000", sampleSessionKey, sampleEncrypted, sampleIV); !errors.Is(err, ErrWatermark) {
		t.Errorf("DecryptUserData(other appid) = %v; want ErrWatermark", err)
	}
}

// encryptForTest builds encryptedData the way WeChat does (AES-128-CBC, PKCS#7).
func encryptForTest(t *testing.T, sessionKey, iv string, plain []byte) string {
	t.Helper()
	key, _ := base64.StdEncoding.DecodeString(sessionKey)
	ivb, _ := base64.StdEncoding.DecodeString(iv)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	n := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(n)}, n)...)
	out := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, ivb).CryptBlocks(out, padded)
	return base64.StdEncoding.EncodeToString(out)
}

func TestDecryptUserDataRejects(t *testing.T) {
	plain, err := DecryptUserData(sampleAppID, sampleSessionKey, sampleEncrypted, sampleIV)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(plain, []byte(sampleAppID), []byte("wx0123456789abcdef"), 1)
	noWatermark := []byte(`{"openId":"o1"}`)
	rawBlocks := func(b []byte) string { // no padding at all: last byte is not a valid pad
		b = append(bytes.Clone(b), bytes.Repeat([]byte{'x'}, aes.BlockSize-len(b)%aes.BlockSize)...)
		key, _ := base64.StdEncoding.DecodeString(sampleSessionKey)
		ivb, _ := base64.StdEncoding.DecodeString(sampleIV)
		block, _ := aes.NewCipher(key)
		out := make([]byte, len(b))
		cipher.NewCBCEncrypter(block, ivb).CryptBlocks(out, b)
		return base64.StdEncoding.EncodeToString(out)
	}
	tests := []struct {
		name                 string
		sessionKey, data, iv string
		want                 error
	}{
		{"tampered watermark appid", sampleSessionKey, encryptForTest(t, sampleSessionKey, sampleIV, tampered), sampleIV, ErrWatermark},
		{"no watermark", sampleSessionKey, encryptForTest(t, sampleSessionKey, sampleIV, noWatermark), sampleIV, ErrWatermark},
		{"not JSON", sampleSessionKey, encryptForTest(t, sampleSessionKey, sampleIV, []byte("hello")), sampleIV, ErrDecrypt},
		{"bad padding", sampleSessionKey, rawBlocks([]byte(`{"a":1}`)), sampleIV, ErrDecrypt},
		{"stale session_key", "AAAAAAAAAAAAAAAAAAAAAA==", sampleEncrypted, sampleIV, ErrDecrypt},
		{"key not base64", "not base64!", sampleEncrypted, sampleIV, ErrDecrypt},
		{"key of 24 bytes", base64.StdEncoding.EncodeToString(make([]byte, 24)), sampleEncrypted, sampleIV, ErrDecrypt},
		{"short iv", sampleSessionKey, sampleEncrypted, "AAAA", ErrDecrypt},
		{"partial block", sampleSessionKey, base64.StdEncoding.EncodeToString(make([]byte, 20)), sampleIV, ErrDecrypt},
		{"empty data", sampleSessionKey, "", sampleIV, ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecryptUserData(sampleAppID, tt.sessionKey, tt.data, tt.iv)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecryptUserData = %v; want %v", err, tt.want)
			}
			assertNoSecret(t, err, sampleSessionKey, tt.sessionKey)
		})
	}
	// A re-encrypted copy of the official plaintext round-trips.
	if _, err := DecryptUserData(sampleAppID, sampleSessionKey, encryptForTest(t, sampleSessionKey, sampleIV, plain), sampleIV); err != nil {
		t.Errorf("DecryptUserData(re-encrypted sample) = %v", err)
	}
}

func TestQRConnectURL(t *testing.T) {
	tests := []struct{ base, want string }{
		{"https://open.weixin.qq.com/connect/qrconnect",
			"https://open.weixin.qq.com/connect/qrconnect?appid=wx1&redirect_uri=https%3A%2F%2Fexample.com%2Fcb%3Fa%3D1&response_type=code&scope=snsapi_login&state=s+1%26#wechat_redirect"},
		{"http://127.0.0.1:9/connect/qrconnect?lang=en",
			"http://127.0.0.1:9/connect/qrconnect?lang=en&appid=wx1&redirect_uri=https%3A%2F%2Fexample.com%2Fcb%3Fa%3D1&response_type=code&scope=snsapi_login&state=s+1%26#wechat_redirect"},
	}
	for _, tt := range tests {
		if got := QRConnectURL(tt.base, "wx1", "https://example.com/cb?a=1", "s 1&"); got != tt.want {
			t.Errorf("QRConnectURL(%q) =\n %s; want\n %s", tt.base, got, tt.want)
		}
	}
}
