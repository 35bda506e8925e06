package wechat

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// JSAPISignature signs a page for wx.config: the hex SHA-1 of
// "jsapi_ticket=T&noncestr=N&timestamp=TS&url=U", unescaped, where U is
// pageURL without its "#fragment". nonceStr and timestamp must be the ones
// passed to wx.config.
func JSAPISignature(ticket, nonceStr string, timestamp int64, pageURL string) string {
	pageURL, _, _ = strings.Cut(pageURL, "#")
	s := "jsapi_ticket=" + ticket + "&noncestr=" + nonceStr +
		"&timestamp=" + strconv.FormatInt(timestamp, 10) + "&url=" + pageURL
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// DecryptUserData decrypts a mini-program's encryptedData (AES-128-CBC with
// key = base64-decoded session_key and the base64 iv, strict PKCS#7) and
// checks that the JSON plaintext's watermark.appid equals appID. It returns
// the plaintext JSON. Errors wrap ErrDecrypt (bad input, wrong or stale
// session_key) or ErrWatermark (data made for another app); they never
// contain the key or the data.
func DecryptUserData(appID, sessionKey, encryptedData, iv string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil || len(key) != 16 {
		return nil, fmt.Errorf("%w: session_key is not base64 of 16 bytes", ErrDecrypt)
	}
	ivb, err := base64.StdEncoding.DecodeString(iv)
	if err != nil || len(ivb) != aes.BlockSize {
		return nil, fmt.Errorf("%w: iv is not base64 of 16 bytes", ErrDecrypt)
	}
	data, err := base64.StdEncoding.DecodeString(encryptedData)
	if err != nil || len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: encryptedData is not base64 of whole AES blocks", ErrDecrypt)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, ivb).CryptBlocks(plain, data)
	plain, ok := unpad(plain)
	if !ok {
		return nil, fmt.Errorf("%w: bad padding (wrong or stale session_key?)", ErrDecrypt)
	}
	var doc struct {
		Watermark *struct {
			AppID string `json:"appid"`
		} `json:"watermark"`
	}
	if err := json.Unmarshal(plain, &doc); err != nil {
		return nil, fmt.Errorf("%w: plaintext is not a JSON object", ErrDecrypt)
	}
	if doc.Watermark == nil || doc.Watermark.AppID != appID {
		return nil, ErrWatermark
	}
	return plain, nil
}

// unpad strips strict PKCS#7 padding: 1 to 16 bytes, all equal to the count.
func unpad(b []byte) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	n := int(b[len(b)-1])
	if n == 0 || n > aes.BlockSize || n > len(b) {
		return nil, false
	}
	if !bytes.Equal(b[len(b)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, false
	}
	return b[:len(b)-n], true
}
