package msgcrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrKey reports an EncodingAESKey that is not 43 characters of
	// base64 (A-Z, a-z, 0-9, "+", "/") decoding to 32 bytes.
	ErrKey = errors.New("msgcrypt: invalid EncodingAESKey")
	// ErrSignature reports a msg_signature that does not match the token,
	// timestamp, nonce and ciphertext: the push was not made with this
	// token, or it was altered.
	ErrSignature = errors.New("msgcrypt: msg_signature does not match")
	// ErrCiphertext reports a ciphertext that is not base64 or not a whole
	// number of AES blocks.
	ErrCiphertext = errors.New("msgcrypt: malformed ciphertext")
	// ErrPadding reports a plaintext whose PKCS#7 padding (to 32 bytes) is
	// wrong: usually a ciphertext made with another EncodingAESKey.
	ErrPadding = errors.New("msgcrypt: bad padding")
	// ErrLength reports a plaintext whose message length field points past
	// its end.
	ErrLength = errors.New("msgcrypt: bad message length")
	// ErrAppID reports a plaintext made for another AppID than the
	// Crypter's.
	ErrAppID = errors.New("msgcrypt: message is for another appid")
	// ErrEnvelope reports a push body that is not WeChat's XML envelope
	// with an Encrypt element.
	ErrEnvelope = errors.New("msgcrypt: malformed envelope")
	// ErrTimestamp reports a push timestamp that is not a decimal number of
	// seconds or lies outside the accepted window around now.
	ErrTimestamp = errors.New("msgcrypt: timestamp outside the accepted window")
)

// KeyLen is the length of an EncodingAESKey in characters.
const KeyLen = 43

// padBlock is the PKCS#7 block size WeChat pads to: 32 bytes, not AES's 16.
const padBlock = 32

// MaxMessage bounds the messages a Crypter encrypts or decrypts (1 MiB);
// WeChat's pushes are a few hundred bytes.
const MaxMessage = 1 << 20

// Crypter encrypts and decrypts messages for one token, EncodingAESKey and
// AppID. Create it with New; the zero value is not usable. A Crypter is
// immutable and safe for concurrent use.
type Crypter struct {
	token string
	appID string
	key   []byte // 32 bytes
	block cipher.Block
}

// ParseKey decodes an EncodingAESKey into the 32-byte AES key. Errors wrap
// ErrKey and never quote the key.
func ParseKey(encodingAESKey string) ([]byte, error) {
	if len(encodingAESKey) != KeyLen {
		return nil, fmt.Errorf("%w: it has %d characters, want %d", ErrKey, len(encodingAESKey), KeyLen)
	}
	// Not Strict: WeChat's keys (its own samples included) leave the two
	// spare bits of the last character non-zero.
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%w: it is not base64 (A-Z, a-z, 0-9, + and /)", ErrKey)
	}
	return key, nil
}

// New returns a Crypter for the message token, the EncodingAESKey and the
// AppID that receives the messages (for an Open Platform component, the
// component AppID). Errors: ErrKey; an empty token or appID is an error too.
func New(token, encodingAESKey, appID string) (*Crypter, error) {
	switch {
	case token == "":
		return nil, errors.New("msgcrypt: token is empty")
	case appID == "":
		return nil, errors.New("msgcrypt: appid is empty")
	}
	key, err := ParseKey(encodingAESKey)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("msgcrypt: %w", err) // unreachable: the key is 32 bytes
	}
	return &Crypter{token: token, appID: appID, key: key, block: block}, nil
}

// AppID returns the AppID the Crypter encrypts for and accepts.
func (c *Crypter) AppID() string { return c.appID }

// Signature returns msg_signature: the hex SHA-1 of token, timestamp, nonce
// and the base64 ciphertext, sorted lexically and concatenated. With an
// empty ciphertext it is the plain "signature" WeChat also sends (token,
// timestamp and nonce only).
func Signature(token, timestamp, nonce, ciphertext string) string {
	parts := []string{token, timestamp, nonce}
	if ciphertext != "" {
		parts = append(parts, ciphertext)
	}
	slices.Sort(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(sum[:])
}

// Verify checks in constant time that msgSignature signs timestamp, nonce
// and ciphertext with the Crypter's token. Errors: ErrSignature.
func (c *Crypter) Verify(msgSignature, timestamp, nonce, ciphertext string) error {
	want := Signature(c.token, timestamp, nonce, ciphertext)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(msgSignature))) != 1 {
		return ErrSignature
	}
	return nil
}

// Encrypt encrypts msg for the Crypter's AppID with 16 fresh random bytes
// and returns the base64 ciphertext. It fails only for a message longer
// than MaxMessage.
func (c *Crypter) Encrypt(msg []byte) (string, error) {
	var random [16]byte
	if _, err := io.ReadFull(rand.Reader, random[:]); err != nil {
		return "", fmt.Errorf("msgcrypt: random bytes: %w", err)
	}
	return c.encrypt(random, msg)
}

// encrypt is Encrypt with the random prefix given, which makes WeChat's
// published vectors reproducible.
func (c *Crypter) encrypt(random [16]byte, msg []byte) (string, error) {
	if len(msg) > MaxMessage {
		return "", fmt.Errorf("msgcrypt: message of %d bytes exceeds %d", len(msg), MaxMessage)
	}
	n := 16 + 4 + len(msg) + len(c.appID)
	pad := padBlock - n%padBlock
	plain := make([]byte, 0, n+pad)
	plain = append(plain, random[:]...)
	plain = binary.BigEndian.AppendUint32(plain, uint32(len(msg)))
	plain = append(plain, msg...)
	plain = append(plain, c.appID...)
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(c.block, c.key[:aes.BlockSize]).CryptBlocks(plain, plain)
	return base64.StdEncoding.EncodeToString(plain), nil
}

// Decrypt decrypts a base64 ciphertext, checks its padding, its length
// field and that it was made for the Crypter's AppID, and returns the
// message. It does not check a signature: use Open or Verify first.
// Errors: ErrCiphertext, ErrPadding, ErrLength, ErrAppID.
func (c *Crypter) Decrypt(ciphertext string) ([]byte, error) {
	msg, appID, err := c.decrypt(ciphertext)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(appID), []byte(c.appID)) != 1 {
		return nil, ErrAppID
	}
	return msg, nil
}

func (c *Crypter) decrypt(ciphertext string) (msg []byte, appID string, err error) {
	if base64.StdEncoding.DecodedLen(len(ciphertext)) > MaxMessage+2*padBlock+64 {
		return nil, "", fmt.Errorf("%w: longer than %d bytes", ErrCiphertext, MaxMessage)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ciphertext))
	if err != nil {
		return nil, "", fmt.Errorf("%w: not base64", ErrCiphertext)
	}
	if len(raw) == 0 || len(raw)%aes.BlockSize != 0 {
		return nil, "", fmt.Errorf("%w: %d bytes is not a whole number of AES blocks", ErrCiphertext, len(raw))
	}
	cipher.NewCBCDecrypter(c.block, c.key[:aes.BlockSize]).CryptBlocks(raw, raw)
	pad := int(raw[len(raw)-1])
	if pad < 1 || pad > padBlock || pad > len(raw) {
		return nil, "", ErrPadding
	}
	for _, b := range raw[len(raw)-pad:] {
		if int(b) != pad {
			return nil, "", ErrPadding
		}
	}
	plain := raw[:len(raw)-pad]
	if len(plain) < 20 {
		return nil, "", fmt.Errorf("%w: plaintext of %d bytes has no room for it", ErrLength, len(plain))
	}
	n := binary.BigEndian.Uint32(plain[16:20])
	if uint64(n) > uint64(len(plain)-20) {
		return nil, "", fmt.Errorf("%w: %d bytes announced, %d present", ErrLength, n, len(plain)-20)
	}
	return plain[20 : 20+n], string(plain[20+n:]), nil
}

// envelope is the XML body of a push: <xml><AppId>…</AppId><Encrypt>…</Encrypt></xml>
// (component events) or with ToUserName instead of AppId (account messages).
type envelope struct {
	XMLName    xml.Name `xml:"xml"`
	AppID      string   `xml:"AppId"`
	ToUserName string   `xml:"ToUserName"`
	Encrypt    string   `xml:"Encrypt"`
}

// Open verifies and decrypts a push: body is the POST body (WeChat's XML
// envelope), and msgSignature, timestamp and nonce come from the query. It
// returns the decrypted message (the event XML). It does not check the
// timestamp's age: see CheckTimestamp. Errors: ErrEnvelope, ErrSignature,
// then those of Decrypt.
func (c *Crypter) Open(msgSignature, timestamp, nonce string, body []byte) ([]byte, error) {
	if len(body) > 2*MaxMessage {
		return nil, fmt.Errorf("%w: body exceeds %d bytes", ErrEnvelope, 2*MaxMessage)
	}
	var env envelope
	if err := xml.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%w: not XML", ErrEnvelope)
	}
	enc := strings.TrimSpace(env.Encrypt)
	if enc == "" {
		return nil, fmt.Errorf("%w: no Encrypt element", ErrEnvelope)
	}
	if err := c.Verify(msgSignature, timestamp, nonce, enc); err != nil {
		return nil, err
	}
	return c.Decrypt(enc)
}

// Sealed is an encrypted push as WeChat sends it: Body is the POST body and
// the other fields go into the query (timestamp, nonce, msg_signature,
// signature, encrypt_type=aes).
type Sealed struct {
	Body         []byte
	Timestamp    string
	Nonce        string
	MsgSignature string
	// Signature is the plain signature over token, timestamp and nonce,
	// which WeChat sends next to msg_signature.
	Signature string
}

// Seal encrypts msg and wraps it the way WeChat pushes an Open Platform
// event: <xml><AppId>appid</AppId><Encrypt>…</Encrypt></xml>, signed with
// timestamp and nonce. It is the inverse of Open, for simulators and tests.
func (c *Crypter) Seal(msg []byte, timestamp, nonce string) (Sealed, error) {
	enc, err := c.Encrypt(msg)
	if err != nil {
		return Sealed{}, err
	}
	var b bytes.Buffer
	b.WriteString("<xml><AppId>")
	writeCDATA(&b, c.appID)
	b.WriteString("</AppId><Encrypt>")
	writeCDATA(&b, enc)
	b.WriteString("</Encrypt></xml>")
	return Sealed{
		Body:         b.Bytes(),
		Timestamp:    timestamp,
		Nonce:        nonce,
		MsgSignature: Signature(c.token, timestamp, nonce, enc),
		Signature:    Signature(c.token, timestamp, nonce, ""),
	}, nil
}

// CheckTimestamp parses a push's timestamp (decimal Unix seconds) and
// checks that it lies within window of now in either direction. WeChat
// signs the timestamp, so a captured push replayed later fails this check;
// inside the window, a receiver refuses replays by remembering the
// (timestamp, nonce) pairs it has seen. Errors: ErrTimestamp.
func CheckTimestamp(timestamp string, now time.Time, window time.Duration) (time.Time, error) {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("%w: not a number of seconds", ErrTimestamp)
	}
	t := time.Unix(sec, 0)
	if d := now.Sub(t); d > window || d < -window {
		return t, fmt.Errorf("%w: %s from now, window %s", ErrTimestamp, d.Truncate(time.Second), window)
	}
	return t, nil
}

// writeCDATA writes s as CDATA sections, splitting any "]]>" inside it.
func writeCDATA(b *bytes.Buffer, s string) {
	b.WriteString("<![CDATA[")
	b.WriteString(strings.ReplaceAll(s, "]]>", "]]]]><![CDATA[>"))
	b.WriteString("]]>")
}
