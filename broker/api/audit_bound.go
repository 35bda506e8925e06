package api

import "unicode/utf8"

// Audit values that come from the request (namespace, appid, the namespace
// header, the remote address) are bounded: one anonymous request must not
// write a 12 KB audit line. A longer value is cut on a UTF-8 boundary and
// marked, so a reader sees that it was cut.
const (
	auditMaxValue  = 64
	auditTruncated = "...[truncated]"
)

// cutPoint returns where to cut s so that it holds at most max bytes, not
// splitting a UTF-8 sequence.
func cutPoint(s string, max int) int {
	if len(s) <= max {
		return len(s)
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}

// appendBounded appends s as a JSON string of at most auditMaxValue bytes
// of s plus the truncation mark. It allocates nothing for the short plain
// ASCII values of every legitimate request.
func appendBounded(dst []byte, s string) []byte {
	n := cutPoint(s, auditMaxValue)
	if n == len(s) {
		return appendString(dst, s)
	}
	dst = appendString(dst, s[:n])
	dst = dst[:len(dst)-1] // reopen the string: appendString ends with '"'
	dst = append(dst, auditTruncated...)
	return append(dst, '"')
}

// bounded is appendBounded for the zap path.
func bounded(s string) string {
	n := cutPoint(s, auditMaxValue)
	if n == len(s) {
		return s
	}
	return s[:n] + auditTruncated
}
