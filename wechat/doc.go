// Package wechat is a client for the WeChat server APIs wxbroker uses: access
// tokens (classic and stable), JS-SDK tickets, mini-program login
// (code2Session, phone numbers, encryptedData), website and Official Account
// OAuth (access token, user info), the Open Platform (component token,
// ticket pushes, pre-authorization codes, authorization-code exchange,
// authorizer tokens and the authorizer list; the pushed events themselves
// are decrypted by package wechat/msgcrypt), and any other token-checked API
// through Call.
//
// The client sends every request to Options.BaseURL and, when that fails at
// the transport level (no answer, a non-200 status, an HTML page, garbled
// JSON), to each of Options.FallbackURLs in turn. A WeChat errcode is an
// answer, never a reason to fall back.
//
// Failures come in two types, told apart with errors.As:
//
//   - *APIError: WeChat answered with an errcode. Its methods classify it
//     (InvalidCredential, Retryable, ConfigError, QuotaExceeded, Relogin) and
//     Hint explains it in Chinese and English; Explain does the same for a
//     bare code.
//   - *TransportError: anything else. OutcomeUnknown reports whether WeChat
//     may have processed the request anyway (sent, then no usable answer),
//     which matters for calls with side effects such as fetching a classic
//     access token.
//
// No secret (AppSecret, access token, session_key, login code, refresh
// token) appears in an error's text: URLs are redacted and echoed values are
// scrubbed from WeChat's messages. The package never logs.
package wechat
