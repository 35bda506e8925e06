package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/wechat"
)

// Kind is one kind of credential: what it is called, how it is fetched, when
// it falls due and what it is fetched with. It is all a kind says; fencing,
// intents, quota and the force budget, invalidation, conditional refresh,
// scheduling, metrics and status are the engine's and the same for every
// kind (docs/ARCHITECTURE.md, "Adding a credential kind").
//
// Implementations hold no state and are safe for concurrent use.
type Kind interface {
	// Name is the kind's label in metrics, logs and the status API, and the
	// second half of its Redis field (<appid>/<name>).
	Name() string
	// API is the credential endpoint Fetch calls: the quota counter and the
	// error metrics are kept per API.
	API() string
	// Needs names the kind whose current value Fetch takes (a ticket is
	// fetched with its app's access token); "" when it needs none. A
	// dependent credential falls due when that value changes, waits while
	// it is missing, and is fetched again once after the value is rejected.
	Needs() string
	// Follows reports that the kind falls due when the value it Needs
	// changes (a ticket follows its access token). An authorizer token,
	// fetched with the component token, does not: a new component token
	// leaves every authorizer token valid.
	Follows() bool
	// Exclusive reports that a new value kills the previous one after
	// WeChat's overlap (access tokens): a call that may mint one records an
	// intent under the fence, an unknown outcome shortens the stored value,
	// and reports of a rejected value are taken (conditional refresh).
	Exclusive() bool
	// Rotating reports that a plain (unforced) call returns the current
	// value until refresh.stable_rotation_window before its expiry and its
	// successor after (stable tokens): such a call never supersedes, and a
	// report tries it before forcing. False: every call mints a new value.
	Rotating() bool
	// Fetch makes the one WeChat call.
	Fetch(ctx context.Context, wx WeChat, req FetchRequest) (Fetched, error)
	// Due is when a value of lifetime life expiring at exp falls due, at
	// jitter (in [0, 1)) of the refresh jitter. latest is when a call must
	// start at the latest so that it ends before the value stops being
	// served; Due stays before it unless the kind cannot get a successor
	// that early.
	Due(r config.Refresh, exp time.Time, life time.Duration, jitter float64, latest time.Time) time.Time
	// Deadline is the latest Due (the end of the jitter range), exported as
	// wxbroker_token_refresh_due_timestamp_seconds.
	Deadline(r config.Refresh, exp time.Time, life time.Duration) time.Time
}

// FetchRequest is what a Fetch gets: the subject's credentials as configured
// now (a reload changes them for the next call) and the value it needs.
type FetchRequest struct {
	AppID  string // the subject: app, component or authorizer
	Secret string // read from the configuration at call time; never logged
	Needed string // the current value of the kind named by Needs
	Forced bool   // a forced refresh (a report of a rejected value)

	// Open Platform: the component an authorizer belongs to, the latest
	// verify ticket (component token), and what an authorizer's token is
	// fetched with: its refresh token, or an authorization code to
	// exchange (api_query_auth) when it was just authorized. Never logged.
	Component    string
	VerifyTicket string
	RefreshToken string
	AuthCode     string
}

// Fetched is what WeChat answered.
type Fetched struct {
	Value     string
	ExpiresIn time.Duration
	// RefreshToken is the authorizer refresh token to use next time (the
	// one sent when WeChat did not rotate it); "" for other kinds.
	RefreshToken string
}

// Kind names, as used in metric labels.
const (
	KindAccessToken     = "access_token"
	KindJSAPITicket     = "jsapi_ticket"
	KindWxCardTicket    = "wx_card_ticket"
	KindComponentToken  = "component_access_token"
	KindAuthorizerToken = "authorizer_access_token"
)

// componentToken is an Open Platform component's component_access_token
// (api_component_token), minted with the latest verify ticket WeChat
// pushed; every call mints a new one.
type componentToken struct{}

func (componentToken) Name() string    { return KindComponentToken }
func (componentToken) API() string     { return wechat.APIComponentToken }
func (componentToken) Needs() string   { return "" }
func (componentToken) Follows() bool   { return false }
func (componentToken) Exclusive() bool { return true }
func (componentToken) Rotating() bool  { return false }

func (componentToken) Fetch(ctx context.Context, wx WeChat, req FetchRequest) (Fetched, error) {
	pw, err := platformOf(wx)
	if err != nil {
		return Fetched{}, err
	}
	if req.VerifyTicket == "" {
		return Fetched{}, errNoVerifyTicket
	}
	tok, err := pw.ComponentToken(ctx, req.AppID, req.Secret, req.VerifyTicket)
	return Fetched{Value: tok.AccessToken, ExpiresIn: tok.ExpiresIn}, err
}

func (componentToken) Due(r config.Refresh, exp time.Time, life time.Duration, jitter float64, latest time.Time) time.Time {
	return earlierOf(leadDue(r, exp, life, jitter), latest)
}

func (componentToken) Deadline(r config.Refresh, exp time.Time, life time.Duration) time.Time {
	before, _ := r.Lead(life)
	return exp.Add(-before)
}

// authorizerToken is an authorizer's authorizer_access_token, fetched with
// the component token and the authorizer's refresh token
// (api_authorizer_token), or, right after an authorization, by exchanging
// the authorization code (api_query_auth). Every call mints a new one.
type authorizerToken struct{}

func (authorizerToken) Name() string    { return KindAuthorizerToken }
func (authorizerToken) API() string     { return wechat.APIAuthorizerToken }
func (authorizerToken) Needs() string   { return KindComponentToken }
func (authorizerToken) Follows() bool   { return false }
func (authorizerToken) Exclusive() bool { return true }
func (authorizerToken) Rotating() bool  { return false }

func (authorizerToken) Fetch(ctx context.Context, wx WeChat, req FetchRequest) (Fetched, error) {
	pw, err := platformOf(wx)
	if err != nil {
		return Fetched{}, err
	}
	if req.AuthCode != "" {
		a, err := pw.QueryAuth(ctx, req.Needed, req.Component, req.AuthCode)
		if err == nil && a.AuthorizerAppID != req.AppID {
			return Fetched{}, fmt.Errorf("%s answered for authorizer %s, not %s", wechat.APIQueryAuth, a.AuthorizerAppID, req.AppID)
		}
		return Fetched{Value: a.AccessToken, ExpiresIn: a.ExpiresIn, RefreshToken: a.RefreshToken}, err
	}
	if req.RefreshToken == "" {
		return Fetched{}, errNoRefreshToken
	}
	tok, err := pw.AuthorizerToken(ctx, req.Needed, req.Component, req.AppID, req.RefreshToken)
	return Fetched{Value: tok.AccessToken, ExpiresIn: tok.ExpiresIn, RefreshToken: tok.RefreshToken}, err
}

func (authorizerToken) Due(r config.Refresh, exp time.Time, life time.Duration, jitter float64, latest time.Time) time.Time {
	return earlierOf(leadDue(r, exp, life, jitter), latest)
}

func (authorizerToken) Deadline(r config.Refresh, exp time.Time, life time.Duration) time.Time {
	before, _ := r.Lead(life)
	return exp.Add(-before)
}

var (
	errNoVerifyTicket   = errors.New("broker: no valid component_verify_ticket stored yet")
	errNoRefreshToken   = errors.New("broker: no usable authorizer refresh token stored")
	errNoPlatformWeChat = errors.New("broker: no Open Platform WeChat client (Options.PlatformWeChat)")
)

// PlatformWeChat is what the broker needs from WeChat for the Open
// Platform; *wechat.Client satisfies it.
type PlatformWeChat interface {
	ComponentToken(ctx context.Context, componentAppID, componentSecret, verifyTicket string) (wechat.ComponentToken, error)
	AuthorizerToken(ctx context.Context, componentAccessToken, componentAppID, authorizerAppID, refreshToken string) (wechat.AuthorizerToken, error)
	StartPushTicket(ctx context.Context, componentAppID, componentSecret string) error
	PreAuthCode(ctx context.Context, componentAccessToken, componentAppID string) (wechat.PreAuthCode, error)
	QueryAuth(ctx context.Context, componentAccessToken, componentAppID, authorizationCode string) (wechat.Authorization, error)
	AuthorizerList(ctx context.Context, componentAccessToken, componentAppID string, offset, count int) ([]wechat.AuthorizerEntry, int, error)
}

var _ PlatformWeChat = (*wechat.Client)(nil)

// bothWeChat is the refresher's client when an Open Platform client is
// given: the app calls of one, the platform calls of the other.
type bothWeChat struct {
	WeChat
	PlatformWeChat
}

func platformOf(wx WeChat) (PlatformWeChat, error) {
	if pw, ok := wx.(PlatformWeChat); ok {
		return pw, nil
	}
	return nil, errNoPlatformWeChat
}

// classicToken is /cgi-bin/token: every call mints a new token, which kills
// the previous one after the overlap.
type classicToken struct{}

func (classicToken) Name() string    { return KindAccessToken }
func (classicToken) API() string     { return wechat.APIToken }
func (classicToken) Needs() string   { return "" }
func (classicToken) Follows() bool   { return false }
func (classicToken) Exclusive() bool { return true }
func (classicToken) Rotating() bool  { return false }

func (classicToken) Fetch(ctx context.Context, wx WeChat, req FetchRequest) (Fetched, error) {
	tok, err := wx.Token(ctx, req.AppID, req.Secret)
	return Fetched{Value: tok.AccessToken, ExpiresIn: tok.ExpiresIn}, err
}

func (classicToken) Due(r config.Refresh, exp time.Time, life time.Duration, jitter float64, latest time.Time) time.Time {
	return earlierOf(leadDue(r, exp, life, jitter), latest)
}

func (classicToken) Deadline(r config.Refresh, exp time.Time, life time.Duration) time.Time {
	before, _ := r.Lead(life)
	return exp.Add(-before)
}

// stableToken is /cgi-bin/stable_token: a plain call returns the same token
// until its last stable_rotation_window, then its successor; a forced call
// mints a new one (limited by WeChat).
type stableToken struct{}

func (stableToken) Name() string    { return KindAccessToken }
func (stableToken) API() string     { return wechat.APIStableToken }
func (stableToken) Needs() string   { return "" }
func (stableToken) Follows() bool   { return false }
func (stableToken) Exclusive() bool { return true }
func (stableToken) Rotating() bool  { return true }

func (stableToken) Fetch(ctx context.Context, wx WeChat, req FetchRequest) (Fetched, error) {
	tok, err := wx.StableToken(ctx, req.AppID, req.Secret, req.Forced)
	return Fetched{Value: tok.AccessToken, ExpiresIn: tok.ExpiresIn}, err
}

// Due calls when 80% of the rotation window is left, jitter later, but not
// before the window opens (WeChat hands out the successor only within it).
// A lifetime shorter than the window is due like a classic token.
func (stableToken) Due(r config.Refresh, exp time.Time, life time.Duration, jitter float64, latest time.Time) time.Time {
	lead, j, ok := r.StableLead(life)
	if !ok {
		return earlierOf(leadDue(r, exp, life, jitter), latest)
	}
	due := exp.Add(-lead).Add(time.Duration(jitter * float64(j)))
	if due.After(latest) {
		due = laterOf(latest, exp.Add(-r.StableRotationWindow))
	}
	return due
}

func (stableToken) Deadline(r config.Refresh, exp time.Time, life time.Duration) time.Time {
	lead, j, ok := r.StableLead(life)
	if !ok {
		before, _ := r.Lead(life)
		return exp.Add(-before)
	}
	return exp.Add(-lead + j)
}

// ticket is /cgi-bin/ticket/getticket of one type, fetched with the app's
// access token.
type ticket struct{ name, typ string }

func (k ticket) Name() string  { return k.name }
func (ticket) API() string     { return wechat.APIGetTicket }
func (ticket) Needs() string   { return KindAccessToken }
func (ticket) Follows() bool   { return true }
func (ticket) Exclusive() bool { return false }
func (ticket) Rotating() bool  { return false }

func (k ticket) Fetch(ctx context.Context, wx WeChat, req FetchRequest) (Fetched, error) {
	tk, err := wx.Ticket(ctx, req.Needed, k.typ)
	return Fetched{Value: tk.Ticket, ExpiresIn: tk.ExpiresIn}, err
}

func (ticket) Due(r config.Refresh, exp time.Time, life time.Duration, jitter float64, latest time.Time) time.Time {
	return earlierOf(leadDue(r, exp, life, jitter), latest)
}

// Deadline is half of before_expiry left: the longest a ticket waits for
// its token's refresh to bring a new one.
func (ticket) Deadline(r config.Refresh, exp time.Time, life time.Duration) time.Time {
	before, _ := r.Lead(life)
	return exp.Add(-before / 2)
}

// leadDue is refresh.before_expiry of the lifetime before exp, minus jitter
// of refresh.jitter.
func leadDue(r config.Refresh, exp time.Time, life time.Duration, jitter float64) time.Time {
	before, j := r.Lead(life)
	return exp.Add(-before).Add(-time.Duration(jitter * float64(j)))
}

// tokenKind is the access-token kind of token_mode mode.
func tokenKind(mode string) Kind {
	if mode == config.ModeClassic {
		return classicToken{}
	}
	return stableToken{}
}

// ticketKind is the kind of ticket type typ ("jsapi", "wx_card").
func ticketKind(typ string) (Kind, bool) {
	switch typ {
	case "jsapi":
		return ticket{name: KindJSAPITicket, typ: typ}, true
	case "wx_card":
		return ticket{name: KindWxCardTicket, typ: typ}, true
	}
	return nil, false
}

var (
	_ Kind = classicToken{}
	_ Kind = stableToken{}
	_ Kind = ticket{}
	_ Kind = componentToken{}
	_ Kind = authorizerToken{}
)

// WeChat is what the broker needs from WeChat; *wechat.Client satisfies it.
type WeChat interface {
	Token(ctx context.Context, appID, secret string) (wechat.Token, error)
	StableToken(ctx context.Context, appID, secret string, force bool) (wechat.Token, error)
	Ticket(ctx context.Context, accessToken, typ string) (wechat.Ticket, error)
	// APIDomainIP is the side-effect-free token check used to verify a
	// report that carries no WeChat answer (see InvalidateUnproven).
	APIDomainIP(ctx context.Context, accessToken string) ([]string, error)
}

var _ WeChat = (*wechat.Client)(nil)

func earlierOf(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
