package wechat

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// API names used in errors, metrics labels and the simulator's statistics.
const (
	APIToken             = "token"
	APIStableToken       = "stable_token"
	APIGetTicket         = "getticket"
	APIJSCode2Session    = "jscode2session"
	APICheckSession      = "checksession"
	APIPhoneNumber       = "getuserphonenumber"
	APIOAuthAccessToken  = "oauth2_access_token"
	APIOAuthRefreshToken = "oauth2_refresh_token"
	APIUserInfo          = "userinfo"
	APIOAuthCheck        = "sns_auth"
	APIComponentToken    = "api_component_token"
	APIAuthorizerToken   = "api_authorizer_token"
	APIStartPushTicket   = "api_start_push_ticket"
	APICreatePreAuthCode = "api_create_preauthcode"
	APIQueryAuth         = "api_query_auth"
	APIGetAuthorizerList = "api_get_authorizer_list"
	APIClearQuota        = "clear_quota"
	APIQuotaGet          = "quota_get"
	APIRidGet            = "rid_get"
	APIDomainIP          = "get_api_domain_ip"
	APIGeneric           = "generic"
)

// Sentinel errors of DecryptUserData.
var (
	// ErrDecrypt reports encryptedData that cannot be decrypted: bad base64,
	// a key or IV that is not 16 bytes, a ciphertext that is not a whole
	// number of blocks, bad PKCS#7 padding or a plaintext that is not JSON.
	// A stale session_key usually shows up as bad padding.
	ErrDecrypt = errors.New("wechat: cannot decrypt user data")
	// ErrWatermark reports decrypted data whose watermark.appid is not the
	// expected AppID: the data was produced for another mini program.
	ErrWatermark = errors.New("wechat: user data watermark does not match appid")
)

// APIError is an errcode answered by WeChat. Code is never 0.
type APIError struct {
	API  string // one of the API* constants
	Code int    // WeChat's errcode
	Msg  string // WeChat's errmsg without the trailing "rid: …"; echoed secrets removed
	RID  string // the request id parsed from errmsg ("rid: xxx"), for getRidInfo; may be empty
}

// Error returns "wechat: API: errcode N: errmsg (rid: R)". It never contains a secret.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("wechat: ")
	if e.API != "" {
		b.WriteString(e.API)
		b.WriteString(": ")
	}
	b.WriteString("errcode ")
	b.WriteString(strconv.Itoa(e.Code))
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	if e.RID != "" {
		b.WriteString(" (rid: ")
		b.WriteString(e.RID)
		b.WriteString(")")
	}
	return b.String()
}

// fetchesCredential reports whether e came from an API that authenticates
// with an AppSecret. An APIError without API classifies like a token-checked
// call.
func (e *APIError) fetchesCredential() bool {
	switch e.API {
	case APIToken, APIStableToken, APIJSCode2Session, APIOAuthAccessToken, APIComponentToken, APIStartPushTicket, APIClearQuota:
		return true
	}
	return false
}

// TokenRejected reports the errcodes with which a token-checked WeChat API
// refuses the access token it was given: 40001 (invalid or superseded),
// 42001 (expired) and 40014 (malformed or unknown). It is the one list of
// them in the module (the client package keeps its own copy, being
// standalone): the gateway's retry, the broker's conditional refresh and
// login's phone-number retry all use it.
func TokenRejected(errcode int) bool {
	switch errcode {
	case 40001, 42001, 40014:
		return true
	}
	return false
}

// InvalidCredential reports an access token that is stale, superseded or
// unknown (TokenRejected) on a token-checked call: refresh the token
// (conditionally, naming the one that failed) and retry once. On calls that
// authenticate with an AppSecret (token, stable_token, jscode2session, …)
// 40001 means the AppSecret is wrong, so it counts as ConfigError instead.
func (e *APIError) InvalidCredential() bool {
	return TokenRejected(e.Code) && !(e.Code == 40001 && e.fetchesCredential())
}

// Retryable reports a transient failure worth retrying with backoff: -1
// (system busy) and 45011 (minute quota; wait MinBackoff first).
func (e *APIError) Retryable() bool {
	switch e.Code {
	case -1, 45011:
		return true
	}
	return false
}

// ConfigError reports a failure that retrying cannot fix and that needs an
// operator: wrong or frozen AppID/AppSecret, IP not whitelisted or awaiting
// the admin's confirmation, missing parameters, a token of the wrong app
// type, an exhausted clear-quota budget, an invalid component ticket.
func (e *APIError) ConfigError() bool {
	switch e.Code {
	case 40001:
		return e.fetchesCredential()
	case 40002, 40013, 40125, 40164, 40243, 41001, 41002, 41004,
		48001, 48006, 48017, 61004, 61005, 61006, 61011, 61024,
		89501, 89503, 89506, 89507:
		return true
	}
	return false
}

// QuotaExceeded reports the daily quota of the API used up (45009): stop
// calling it until the quota resets (midnight UTC+8) or clear_quota is used.
func (e *APIError) QuotaExceeded() bool { return e.Code == 45009 }

// Relogin reports that the user's code, session or OAuth grant is no longer
// usable (40029, 40163, 40226, 40030, 42002, 42003, 42007, 87009): the user
// must log in or authorize again; retrying the same input never helps.
func (e *APIError) Relogin() bool {
	switch e.Code {
	case 40029, 40163, 40226, 40030, 42002, 42003, 42007, 87009:
		return true
	}
	return false
}

// Reauthorize reports that an Open Platform authorizer can no longer be
// served without the merchant (or a recovered refresh token): 61023 (the
// authorizer_refresh_token is invalid: revoked, re-authorized, lost),
// 61003 (the account has not authorized the component), 61009 and 61010
// (the authorization code is invalid or expired). Retrying the same input
// never helps; recover the refresh token with api_get_authorizer_list or
// have the merchant authorize again.
func (e *APIError) Reauthorize() bool {
	switch e.Code {
	case 61003, 61009, 61010, 61023:
		return true
	}
	return false
}

// MinBackoff is the least time to wait before retrying: 60s for 45011 (the
// minute quota), else 0.
func (e *APIError) MinBackoff() time.Duration {
	if e.Code == 45011 {
		return time.Minute
	}
	return 0
}

// Hint explains the errcode in Chinese and English. Codes not in the table
// get a generic hint that points to getRidInfo.
func (e *APIError) Hint() Hint {
	h, _ := Explain(e.Code)
	return h
}

// TransportKind classifies a TransportError.
type TransportKind int

// The kinds of transport failure.
const (
	// KindStatus is an HTTP status other than 200 (WeChat answers even
	// errors with 200, so this comes from a gateway or proxy).
	KindStatus TransportKind = iota + 1
	// KindHTML is a 200 answer carrying an HTML page (captive portal, error page).
	KindHTML
	// KindInvalidJSON is an answer that is not the expected JSON object,
	// including a success answer that lacks a required field.
	KindInvalidJSON
	// KindTimeout is a deadline hit while connecting, sending or waiting for the answer.
	KindTimeout
	// KindConnection is any other network failure: refused, reset, closed, DNS,
	// or the caller's context canceled.
	KindConnection
)

// String returns the kind's lower-case name.
func (k TransportKind) String() string {
	switch k {
	case KindStatus:
		return "http status"
	case KindHTML:
		return "html answer"
	case KindInvalidJSON:
		return "invalid json"
	case KindTimeout:
		return "timeout"
	case KindConnection:
		return "connection error"
	}
	return "transport error"
}

// TransportError is any failure other than an errcode: a non-200 status, an
// HTML body, invalid JSON, a timeout, a connection error. When fallback URLs
// were tried it describes the last attempt, and OutcomeUnknown covers every
// attempt.
type TransportError struct {
	API        string // one of the API* constants
	Kind       TransportKind
	StatusCode int   // the HTTP status for KindStatus, else 0 when no answer came
	Err        error // the cause; URLs in it are redacted

	notSent bool              // this attempt certainly never reached the server
	earlier []*TransportError // failed attempts at the URLs tried before this one
}

// Error describes the failure with the URL redacted: no secret, access
// token or code appears in it.
func (e *TransportError) Error() string {
	var b strings.Builder
	b.WriteString("wechat: ")
	if e.API != "" {
		b.WriteString(e.API)
		b.WriteString(": ")
	}
	e.describe(&b)
	for _, p := range e.earlier {
		b.WriteString("; earlier attempt: ")
		p.describe(&b)
	}
	return b.String()
}

func (e *TransportError) describe(b *strings.Builder) {
	b.WriteString(e.Kind.String())
	if e.StatusCode != 0 {
		fmt.Fprintf(b, " %d", e.StatusCode)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
}

// Unwrap returns the cause, so errors.Is(err, context.DeadlineExceeded) works.
func (e *TransportError) Unwrap() error { return e.Err }

// OutcomeUnknown reports whether WeChat may have processed the request even
// though no usable answer came back: a timeout or a dropped connection after
// the request was sent, a garbled or HTML answer, a 5xx from a gateway. It is
// false when the request certainly was not processed (connection refused,
// DNS failure, a 4xx from a proxy). With fallback URLs, it is true if any
// attempt's outcome is unknown. A caller that fetched a classic access token
// must then assume a new token was minted and the stored one dies soon.
func (e *TransportError) OutcomeUnknown() bool {
	for _, p := range e.earlier {
		if p.OutcomeUnknown() {
			return true
		}
	}
	switch e.Kind {
	case KindStatus:
		return e.StatusCode >= 500
	case KindHTML, KindInvalidJSON:
		return true
	}
	return !e.notSent && !isDialError(e.Err)
}

// isDialError reports a failure to open the connection: nothing was sent.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// OutcomeUnknown reports whether err is a *TransportError whose request WeChat
// may have processed (see TransportError.OutcomeUnknown). It is false for nil,
// for an *APIError (WeChat answered) and for any other error.
func OutcomeUnknown(err error) bool {
	var te *TransportError
	return errors.As(err, &te) && te.OutcomeUnknown()
}
