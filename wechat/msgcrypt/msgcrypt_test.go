package msgcrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	testToken = "open-token-1"
	testKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	testAppID = "wx00000000000000c1"
)

// rawEncrypt CBC-encrypts plain as it is (no padding added), for crafting
// malformed plaintexts.
func rawEncrypt(t *testing.T, c *Crypter, plain []byte) string {
	t.Helper()
	if len(plain)%aes.BlockSize != 0 {
		t.Fatalf("rawEncrypt: %d bytes is not whole blocks", len(plain))
	}
	out := bytes.Clone(plain)
	cipher.NewCBCEncrypter(c.block, c.key[:aes.BlockSize]).CryptBlocks(out, out)
	return base64.StdEncoding.EncodeToString(out)
}

// plaintext builds random | length | msg | appID without padding, with the
// length field set to n.
func plaintext(n uint32, msg, appID string) []byte {
	p := bytes.Repeat([]byte{'r'}, 16)
	p = binary.BigEndian.AppendUint32(p, n)
	p = append(p, msg...)
	return append(p, appID...)
}

func pad(p []byte, n int) []byte { return append(p, bytes.Repeat([]byte{byte(n)}, n)...) }

func TestNewKey(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		ok        bool
	}{
		{"sample key", testKey, true},
		{"wecom sample key", wecomKey, true},
		{"empty", "", false},
		{"42 characters", testKey[:42], false},
		{"44 characters", testKey + "A", false},
		{"with the padding", testKey[:42] + "=", false},
		{"not base64", strings.Repeat("!", 43), false},
		{"url alphabet", "-" + testKey[1:], false},
		{"a newline inside", testKey[:20] + "\n" + testKey[21:], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(testToken, tc.key, testAppID)
			if tc.ok != (err == nil) {
				t.Fatalf("New(key %q) = %v; want ok %v", tc.key, err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrKey) {
					t.Errorf("New(key %q) = %v; want ErrKey", tc.key, err)
				}
				if tc.key != "" && strings.Contains(err.Error(), tc.key) {
					t.Errorf("error %q quotes the key", err)
				}
			}
		})
	}
	if _, err := New("", testKey, testAppID); err == nil {
		t.Error("New(empty token) = nil error")
	}
	if _, err := New(testToken, testKey, ""); err == nil {
		t.Error("New(empty appid) = nil error")
	}
}

func TestDecryptErrors(t *testing.T) {
	c := mustNew(t, testToken, testKey, testAppID)
	other := mustNew(t, testToken, wecomKey, testAppID)
	good, err := c.Encrypt([]byte("<xml>hi</xml>"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ct string
		want     error
	}{
		{"not base64", "%%%", ErrCiphertext},
		{"empty", "", ErrCiphertext},
		{"not whole blocks", base64.StdEncoding.EncodeToString(make([]byte, 20)), ErrCiphertext},
		{"pad byte 0", rawEncrypt(t, c, append(plaintext(0, "", "wx000000000"), 0)), ErrPadding},
		{"pad byte 33", rawEncrypt(t, c, append(plaintext(0, strings.Repeat("a", 11), ""), bytes.Repeat([]byte{33}, 33)...)), ErrPadding},
		{"pad bytes differ", rawEncrypt(t, c, append(plaintext(0, "", "wx0000"), 1, 2, 3, 4, 5, 6)), ErrPadding},
		{"another key", mustEncrypt(t, other, "<xml/>"), ErrPadding},
		{"length past the end", rawEncrypt(t, c, pad(plaintext(100, "<xml/>", testAppID), 4)), ErrLength},
		{"too short for a length", rawEncrypt(t, c, pad(bytes.Repeat([]byte{'r'}, 16), 16)), ErrLength},
		{"another appid", mustEncrypt(t, mustNew(t, testToken, testKey, "wx00000000000000c2"), "<xml/>"), ErrAppID},
		{"no appid", rawEncrypt(t, c, pad(plaintext(6, "<xml/>", ""), 6)), ErrAppID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := c.Decrypt(tc.ct)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decrypt = %q, %v; want %v", msg, err, tc.want)
			}
		})
	}
	if msg, err := c.Decrypt(good); err != nil || string(msg) != "<xml>hi</xml>" {
		t.Fatalf("Decrypt(good) = %q, %v", msg, err)
	}
}

func mustEncrypt(t *testing.T, c *Crypter, msg string) string {
	t.Helper()
	s, err := c.Encrypt([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPaddingTo32Bytes(t *testing.T) {
	c := mustNew(t, testToken, testKey, testAppID)
	for n := range 70 {
		msg := strings.Repeat("x", n)
		raw, err := base64.StdEncoding.DecodeString(mustEncrypt(t, c, msg))
		if err != nil {
			t.Fatal(err)
		}
		unpadded := 20 + n + len(testAppID)
		if len(raw)%32 != 0 || len(raw) <= unpadded || len(raw) > unpadded+32 {
			t.Fatalf("message of %d bytes: ciphertext of %d bytes; want the next multiple of 32 above %d", n, len(raw), unpadded)
		}
		if got, err := c.Decrypt(base64.StdEncoding.EncodeToString(raw)); err != nil || string(got) != msg {
			t.Fatalf("round trip of %d bytes = %q, %v", n, got, err)
		}
	}
}

func TestSealOpen(t *testing.T) {
	c := mustNew(t, testToken, testKey, testAppID)
	msg := []byte("<xml><AppId><![CDATA[wx00000000000000c1]]></AppId><InfoType>x</InfoType></xml>")
	s, err := c.Seal(msg, "1700000000", "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(s.Body, []byte("<xml><AppId><![CDATA["+testAppID+"]]></AppId><Encrypt><![CDATA[")) {
		t.Errorf("Seal body = %s", s.Body)
	}
	if s.Signature != Signature(testToken, "1700000000", "nonce-1", "") || s.Signature == s.MsgSignature {
		t.Errorf("Seal signature %q, msg_signature %q", s.Signature, s.MsgSignature)
	}
	got, err := c.Open(s.MsgSignature, s.Timestamp, s.Nonce, s.Body)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Open(Seal) = %q, %v", got, err)
	}
	if _, err := c.Open(strings.ToUpper(s.MsgSignature), s.Timestamp, s.Nonce, s.Body); err != nil {
		t.Errorf("Open(upper-case signature) = %v", err)
	}
	for _, tc := range []struct {
		name string
		body string
		want error
	}{
		{"not XML", "hello", ErrEnvelope},
		{"no Encrypt", "<xml><AppId>x</AppId></xml>", ErrEnvelope},
		{"empty Encrypt", "<xml><Encrypt></Encrypt></xml>", ErrEnvelope},
		{"other Encrypt", "<xml><Encrypt>abcd</Encrypt></xml>", ErrSignature},
	} {
		if _, err := c.Open(s.MsgSignature, s.Timestamp, s.Nonce, []byte(tc.body)); !errors.Is(err, tc.want) {
			t.Errorf("Open(%s) = %v; want %v", tc.name, err, tc.want)
		}
	}
}

func TestSignature(t *testing.T) {
	// Sorting: the order of the arguments does not matter.
	a := Signature("b", "a", "d", "c")
	b := Signature("d", "c", "b", "a")
	if a != b || len(a) != 40 {
		t.Fatalf("Signature not order-independent: %q, %q", a, b)
	}
	// sha1("abcd")
	if a != "81fe8bfe87576c3ecb22426f8e57847382917acf" {
		t.Fatalf("Signature = %q; want sha1(\"abcd\")", a)
	}
}

func TestCheckTimestamp(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		ts string
		ok bool
	}{
		{"1700000000", true},
		{"1699999701", true},
		{"1700000299", true},
		{"1699999000", false},
		{"1700001000", false},
		{"", false},
		{"-5", false},
		{"17e8", false},
	} {
		got, err := CheckTimestamp(tc.ts, now, 5*time.Minute)
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrTimestamp) {
			t.Errorf("CheckTimestamp(%q) = %v, %v; want ok %v", tc.ts, got, err, tc.ok)
		}
	}
}

func TestRoundTripRandomPrefix(t *testing.T) {
	c := mustNew(t, testToken, testKey, testAppID)
	a, b := mustEncrypt(t, c, "same"), mustEncrypt(t, c, "same")
	if a == b {
		t.Fatal("two encryptions of one message are equal: the random prefix is not random")
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte(""), "ts", "n")
	f.Add([]byte(mpJavaMsg2), "1409304348", "xxxxxx")
	f.Add(bytes.Repeat([]byte{0}, 64), "0", "")
	c, err := New(testToken, testKey, testAppID)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte, ts, nonce string) {
		s, err := c.Seal(msg, ts, nonce)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Open(s.MsgSignature, ts, nonce, s.Body)
		if err != nil {
			// The envelope carries only base64, so any failure is a bug.
			t.Fatalf("Open(Seal(%q)) = %v", msg, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("Open(Seal(%q)) = %q", msg, got)
		}
	})
}

func FuzzDecrypt(f *testing.F) {
	f.Add(mpJavaEnc1)
	f.Add(mpJavaEnc2)
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAA==")
	c, err := New(mpJavaToken, mpJavaKey, mpJavaAppID)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		msg, err := c.Decrypt(ct) // must not panic
		if err == nil {
			// Whatever decrypts must encrypt back to something that decrypts
			// to the same message.
			again, err := c.Decrypt(mustEncrypt(t, c, string(msg)))
			if err != nil || !bytes.Equal(again, msg) {
				t.Fatalf("round trip of %q = %q, %v", msg, again, err)
			}
		}
	})
}
