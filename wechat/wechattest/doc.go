// Package wechattest is a WeChat server simulator for tests, benchmarks and
// local development, shaped like net/http/httptest.
//
// A Sim is an http.Handler that answers WeChat's real paths with WeChat's JSON
// shapes and error codes, and with the semantics that matter to a token
// broker: classic access tokens where the last fetch wins (the previous token
// stays valid for an overlap, older ones die at once), stable tokens that
// rotate inside the last minutes of their life and limit forced refreshes,
// daily quotas per UTC+8 day, AppSecret and IP allow-list checks, single-use
// login and phone codes, JS-SDK tickets, the web OAuth flow with a clickable
// qrconnect page, the Open Platform (third-party platform) and a generic API
// that only checks the access token.
//
// For the Open Platform, AddComponent registers a component with its message
// token, EncodingAESKey and event URL: the simulator pushes encrypted
// component_verify_ticket events there (every Options.TicketPushInterval, and
// at once after api_start_push_ticket), serves the authorization page
// (/cgi-bin/componentloginpage, whose confirm pushes authorized and
// redirects with auth_code), api_create_preauthcode, api_query_auth,
// api_authorizer_token with refresh-token rules (61003, 61023 after
// revocation or rotation, rotation when told to) and
// api_get_authorizer_list; Authorize and Revoke act as a merchant without
// a browser.
//
// Tests inject a clock through Options.Now so lifetimes pass without
// sleeping, queue faults for the next calls of an API with Fail (latency, 5xx
// with an HTML body, invalid JSON, an errcode, a dropped connection, or a
// processed request whose response is lost), and assert on the stats (Calls,
// TokensIssued, Answered, TokenValid).
//
// NewServer starts a Sim on a loopback port, like httptest.NewServer. The
// same Sim also serves out-of-process users (`wxbroker sim`, node tests)
// through JSON control endpoints under /sim/.
//
// Every method of Sim is safe for concurrent use.
package wechattest
