package wechat

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxMsgLen bounds the errmsg kept in an APIError.
const maxMsgLen = 512

// errNotObject and friends describe invalid answers without quoting them: an
// answer may carry a token, so its bytes never go into an error.
var (
	errEmptyBody   = errors.New("empty body")
	errNotObject   = errors.New("answer is not a JSON object")
	errBadErrcode  = errors.New("errcode is not an integer")
	errHTMLAnswer  = errors.New("answer is an HTML page")
	errBodyTooLong = errors.New("answer exceeds 1 MiB")
)

// decode is the one decoder for every WeChat answer. An errcode that is
// absent, null or 0 means success and the body is decoded into out (when out
// is not nil); any other errcode gives an *APIError. Every other problem gives
// a *TransportError of kind KindHTML or KindInvalidJSON. It never panics and
// never quotes the body in an error.
func decode(api string, body []byte, out any) error {
	body = bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")))
	switch {
	case len(body) == 0:
		return invalidJSON(api, errEmptyBody)
	case body[0] == '<':
		return &TransportError{API: api, Kind: KindHTML, Err: errHTMLAnswer}
	case body[0] != '{':
		return invalidJSON(api, errNotObject)
	}
	var env struct {
		Errcode json.RawMessage `json:"errcode"`
		Errmsg  json.RawMessage `json:"errmsg"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return invalidJSON(api, jsonCause(err))
	}
	code, ok := parseErrcode(env.Errcode)
	if !ok {
		return invalidJSON(api, errBadErrcode)
	}
	if code != 0 {
		return newAPIError(api, code, parseErrmsg(env.Errmsg))
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return invalidJSON(api, jsonCause(err))
		}
	}
	return nil
}

func invalidJSON(api string, err error) *TransportError {
	return &TransportError{API: api, Kind: KindInvalidJSON, Err: err}
}

// jsonCause keeps encoding/json's description of what went wrong, which names
// fields and types but never values, and drops the rest.
func jsonCause(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return errors.New("malformed JSON at offset " + strconv.FormatInt(syn.Offset, 10))
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return errors.New("field " + strconv.Quote(typ.Field) + ": unexpected JSON " + typ.Value)
	}
	// Errors from our own UnmarshalJSON methods and "unexpected end of JSON input".
	return errors.New("malformed JSON: " + sanitize(err.Error(), 120))
}

// parseErrcode accepts a JSON number (integral, in int32 range) or a string
// holding one; absent and null are 0.
func parseErrcode(raw json.RawMessage) (int, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, true
	}
	n, ok := parseLenientInt(raw)
	if !ok || n < math.MinInt32 || n > math.MaxInt32 {
		return 0, false
	}
	return int(n), true
}

// parseLenientInt parses a JSON number or a JSON string holding a number.
// Floats are accepted when integral ("86.0").
func parseLenientInt(raw []byte) (int64, bool) {
	text := string(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		text = strings.TrimSpace(s)
	}
	if n, err := strconv.ParseInt(text, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

// parseErrmsg returns errmsg as text whatever its JSON type.
func parseErrmsg(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if string(raw) == "null" {
		return ""
	}
	return string(raw)
}

// newAPIError splits "text rid: xxx" into Msg and RID.
func newAPIError(api string, code int, errmsg string) *APIError {
	msg, rid := splitRID(errmsg)
	return &APIError{API: api, Code: code, Msg: sanitize(msg, maxMsgLen), RID: sanitize(rid, 64)}
}

// splitRID finds the last "rid:" in errmsg and takes the id after it
// (letters, digits and '-'). WeChat appends it as " rid: 6004f3da-1529ba72-5c345f67".
func splitRID(errmsg string) (msg, rid string) {
	i := strings.LastIndex(errmsg, "rid:")
	if i < 0 || (i > 0 && isRIDChar(rune(errmsg[i-1]))) {
		return strings.TrimSpace(errmsg), ""
	}
	rest := strings.TrimLeft(errmsg[i+len("rid:"):], " ")
	end := strings.IndexFunc(rest, func(r rune) bool { return !isRIDChar(r) })
	if end < 0 {
		end = len(rest)
	}
	rid = rest[:end]
	if rid == "" {
		return strings.TrimSpace(errmsg), ""
	}
	msg = errmsg[:i] + rest[end:]
	msg = strings.TrimRight(strings.TrimSpace(msg), ",;")
	return strings.TrimSpace(msg), rid
}

func isRIDChar(r rune) bool {
	return r == '-' || r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r))
}

// sanitize makes text safe for one log line: valid UTF-8, no control
// characters, at most max bytes.
func sanitize(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// flexString decodes a JSON string or number as text (countryCode is
// documented as a string but the official sample shows the number 86).
type flexString string

// UnmarshalJSON accepts a string, a number or null.
func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("want a string or a number")
	}
	*f = flexString(n.String())
	return nil
}

// flexInt decodes a JSON number or a numeric string as an integer.
type flexInt int64

// UnmarshalJSON accepts an integral number, a string holding one, or null.
func (f *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	n, ok := parseLenientInt(b)
	if !ok {
		return errors.New("want an integer")
	}
	*f = flexInt(n)
	return nil
}

// maxLifetime bounds expires_in: WeChat's lifetimes are hours or days, and
// anything past ten years is a garbled answer (and would overflow Duration
// arithmetic downstream).
const maxLifetime = 10 * 365 * 24 * time.Hour

// lifetime converts expires_in seconds to a Duration, refusing zero,
// negative and absurd values.
func lifetime(secs flexInt) (time.Duration, error) {
	if secs <= 0 || int64(secs) > int64(maxLifetime/time.Second) {
		return 0, errors.New("expires_in " + strconv.FormatInt(int64(secs), 10) + " is out of range")
	}
	return time.Duration(secs) * time.Second, nil
}

// errMissing reports a success answer without a field the call needs.
func errMissing(field string) error { return errors.New("answer lacks " + field) }
