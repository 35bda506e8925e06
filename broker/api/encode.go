package api

import (
	"encoding/json"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The read routes encode their answers by appending to a pooled buffer rather
// than through encoding/json: the answer has a fixed shape, and reflection
// plus its allocations would be a visible share of a cache read (the token-read targets of
// docs/BENCHMARKS.md).

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// appendString appends s as a JSON string. Plain printable ASCII (what WeChat
// tokens and tickets are made of) is copied as is; anything else goes through
// encoding/json, which escapes it correctly (HTML-safe).
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(dst, q...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// secondsLeft is the whole number of seconds from now until t for a 200
// answer: at least 1 (the broker serves nothing with less than a second of
// life, and the moment between its check and this clock read must not turn
// into "expires_in": 0, which no client can use), 0 only when t has passed.
func secondsLeft(t, now time.Time) int64 {
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return max(int64(d/time.Second), 1)
}

// appendTokenJSON encodes {"access_token","expires_in","expires_at","generation"}.
func appendTokenJSON(dst []byte, token string, expiresAt, now time.Time, generation int64) []byte {
	dst = append(dst, `{"access_token":`...)
	dst = appendString(dst, token)
	dst = append(dst, `,"expires_in":`...)
	dst = strconv.AppendInt(dst, secondsLeft(expiresAt, now), 10)
	dst = append(dst, `,"expires_at":"`...)
	dst = expiresAt.UTC().AppendFormat(dst, time.RFC3339)
	dst = append(dst, `","generation":`...)
	dst = strconv.AppendInt(dst, generation, 10)
	return append(dst, '}')
}

// appendTicketJSON encodes {"ticket","expires_in","expires_at"}.
func appendTicketJSON(dst []byte, ticket string, expiresAt, now time.Time) []byte {
	dst = append(dst, `{"ticket":`...)
	dst = appendString(dst, ticket)
	dst = append(dst, `,"expires_in":`...)
	dst = strconv.AppendInt(dst, secondsLeft(expiresAt, now), 10)
	dst = append(dst, `,"expires_at":"`...)
	dst = expiresAt.UTC().AppendFormat(dst, time.RFC3339)
	return append(dst, `"}`...)
}

// appendWeChatTokenJSON encodes WeChat's own {"access_token","expires_in"}.
func appendWeChatTokenJSON(dst []byte, token string, expiresAt, now time.Time) []byte {
	dst = append(dst, `{"access_token":`...)
	dst = appendString(dst, token)
	dst = append(dst, `,"expires_in":`...)
	dst = strconv.AppendInt(dst, secondsLeft(expiresAt, now), 10)
	return append(dst, '}')
}

// appendWeChatTicketJSON encodes WeChat's own getticket answer.
func appendWeChatTicketJSON(dst []byte, ticket string, expiresAt, now time.Time) []byte {
	dst = append(dst, `{"errcode":0,"errmsg":"ok","ticket":`...)
	dst = appendString(dst, ticket)
	dst = append(dst, `,"expires_in":`...)
	dst = strconv.AppendInt(dst, secondsLeft(expiresAt, now), 10)
	return append(dst, '}')
}
