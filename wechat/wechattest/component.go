package wechattest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
)

// Open Platform (third-party platform) APIs beyond the two token endpoints
// of tokens.go, named like the wechat.API* constants.
const (
	apiStartPushTicket    = "api_start_push_ticket"
	apiCreatePreAuthCode  = "api_create_preauthcode"
	apiQueryAuth          = "api_query_auth"
	apiGetAuthorizerList  = "api_get_authorizer_list"
	apiComponentEventPush = "component_push" // fault queue of the simulator's own pushes
)

// Lifetimes WeChat documents for the Open Platform.
const (
	preAuthCodeTTL = 1800 * time.Second // api_create_preauthcode: expires_in 1800
	authCodeTTL    = 3600 * time.Second // authorization code: AuthorizationCodeExpiredTime
)

// Component registers an Open Platform third-party platform ("component")
// with the simulator: AddComponent.
type Component struct {
	// AppID and Secret are the component AppID and AppSecret
	// (component_appid, component_appsecret).
	AppID  string
	Secret string
	// Token and EncodingAESKey are the message token and key of the
	// authorization-event URL; pushes are encrypted with them.
	Token          string
	EncodingAESKey string
	// EventURL receives the pushes (component_verify_ticket every
	// Options.TicketPushInterval, authorized, updateauthorized,
	// unauthorized) as encrypted XML POSTs. Empty: nothing is pushed;
	// tickets are still minted and can be read with VerifyTicket.
	EventURL string
	// RotateRefreshTokens makes every successful api_authorizer_token
	// answer a new authorizer_refresh_token; the one sent dies at once
	// (61023). Off, the refresh token stays the same, as WeChat usually
	// answers. SetRefreshRotation changes it later.
	RotateRefreshTokens bool
}

// component is a registered component and its Open Platform state.
// Guarded by Sim.mu.
type component struct {
	cfg         Component
	crypt       *msgcrypt.Crypter
	tickets     map[string]time.Time // verify ticket → minted
	latest      string               // the latest verify ticket
	preAuth     map[string]time.Time // pre_auth_code → expiry
	authCodes   map[string]*authCode
	authorizers map[string]*authorization
	order       []string // authorizer appids in first-authorization order
	last        *delivery
	delivered   map[msgcrypt.InfoType]int
	failed      int
	dropped     int
}

// authorization is one account's authorization of a component.
type authorization struct {
	refreshToken string
	revoked      bool
	authTime     time.Time
}

// authCode is a single-use authorization code for api_query_auth.
type authCode struct {
	authorizer string
	expiresAt  time.Time
	used       bool
}

// delivery is one push as sent, kept for RepushLast.
type delivery struct {
	url    string
	info   msgcrypt.InfoType
	sealed msgcrypt.Sealed
}

// componentState is the Sim's Open Platform state; its maps are guarded by
// Sim.mu.
type componentState struct {
	byID    map[string]*component
	pending map[string]bool // components whose ticket push was asked for
	wake    chan struct{}   // signals RunPushes that pending is not empty
}

func newComponentState() componentState {
	return componentState{
		byID:    make(map[string]*component),
		pending: make(map[string]bool),
		wake:    make(chan struct{}, 1),
	}
}

// AddComponent registers a component, or replaces the settings of a
// registered one (its tickets and authorizers stay). The component AppID
// also becomes an app with the secret (AddApp), so quotas, SetAllowedIPs
// (61004 for every component API) and Calls work as for apps. A component
// registered here follows WeChat's rules: api_component_token accepts only
// verify tickets the simulator minted for it (61006 otherwise, 61005 after
// Options.VerifyTicketTTL), and api_authorizer_token only an authorizer's
// current refresh token (61003 for an account that never authorized, 61023
// after revocation or rotation). An app used as a component without
// AddComponent keeps the lax rules: any ticket and any refresh token pass.
//
// A RunPushes loop (NewServer runs one) pushes the first ticket right away.
// It fails when the EncodingAESKey is not 43 base64 characters or a field
// other than EventURL is empty.
func (s *Sim) AddComponent(c Component) error {
	if c.AppID == "" || c.Secret == "" || c.Token == "" {
		return errors.New("wechattest: AddComponent: AppID, Secret and Token are required")
	}
	crypt, err := msgcrypt.New(c.Token, c.EncodingAESKey, c.AppID)
	if err != nil {
		return fmt.Errorf("wechattest: AddComponent %s: %w", c.AppID, err)
	}
	s.AddApp(c.AppID, c.Secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.comps.byID[c.AppID]; ok {
		old.cfg, old.crypt = c, crypt
	} else {
		s.comps.byID[c.AppID] = &component{
			cfg:         c,
			crypt:       crypt,
			tickets:     make(map[string]time.Time),
			preAuth:     make(map[string]time.Time),
			authCodes:   make(map[string]*authCode),
			authorizers: make(map[string]*authorization),
			delivered:   make(map[msgcrypt.InfoType]int),
		}
	}
	s.askTicketPush(c.AppID)
	return nil
}

// askTicketPush marks a component for a ticket push by RunPushes. Callers
// hold s.mu.
func (s *Sim) askTicketPush(appID string) {
	s.comps.pending[appID] = true
	select {
	case s.comps.wake <- struct{}{}:
	default:
	}
}

// SetRefreshRotation turns refresh-token rotation of a registered
// component on or off (see Component.RotateRefreshTokens). Unknown
// components are ignored.
func (s *Sim) SetRefreshRotation(componentAppID string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if comp, ok := s.comps.byID[componentAppID]; ok {
		comp.cfg.RotateRefreshTokens = on
	}
}

// VerifyTicket returns the latest component_verify_ticket minted for a
// registered component, or "" before the first push.
func (s *Sim) VerifyTicket(componentAppID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if comp, ok := s.comps.byID[componentAppID]; ok {
		return comp.latest
	}
	return ""
}

// RefreshToken returns an authorizer's current authorizer_refresh_token
// and whether the authorization is active (known and not revoked).
func (s *Sim) RefreshToken(componentAppID, authorizerAppID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if comp, ok := s.comps.byID[componentAppID]; ok {
		if a, ok := comp.authorizers[authorizerAppID]; ok && !a.revoked {
			return a.refreshToken, true
		}
	}
	return "", false
}

// Pushes returns how many pushes of an InfoType the component's event URL
// accepted (HTTP 200 with the body "success").
func (s *Sim) Pushes(componentAppID string, info msgcrypt.InfoType) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if comp, ok := s.comps.byID[componentAppID]; ok {
		return comp.delivered[info]
	}
	return 0
}

// PushFailures returns how many pushes to the component's event URL failed
// (no answer, another status or another body) and how many a fault dropped.
func (s *Sim) PushFailures(componentAppID string) (failed, dropped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if comp, ok := s.comps.byID[componentAppID]; ok {
		return comp.failed, comp.dropped
	}
	return 0, 0
}

// component returns a registered component. Callers hold s.mu.
func (s *Sim) component(appID string) (*component, error) {
	comp, ok := s.comps.byID[appID]
	if !ok {
		return nil, fmt.Errorf("wechattest: component %s is not registered (AddComponent)", appID)
	}
	return comp, nil
}

// authorizerApp returns the app record of an authorizer, creating it with
// a random secret: an account that authorizes a component need not be
// added with AddApp. Callers hold s.mu.
func (s *Sim) authorizerApp(appID string) *app {
	if a, ok := s.apps[appID]; ok {
		return a
	}
	a := &app{
		id:     appID,
		secret: rand.Text(),
		limits: make(map[string]int),
		used:   make(map[string]int),
		chains: make(map[kind]*chain),
	}
	s.apps[appID] = a
	return a
}

func newRefreshToken() string { return "refreshtoken@@@" + rand.Text() + rand.Text() }

// authorize records a merchant's confirmation and returns the event to
// push: authorized for a new (or previously revoked) authorization, with a
// new refresh token; updateauthorized for an active one, whose refresh
// token stays. Callers hold s.mu.
func (s *Sim) authorize(comp *component, authorizerAppID, preAuthCode string) msgcrypt.Event {
	now := s.now()
	s.authorizerApp(authorizerAppID)
	info := msgcrypt.InfoUpdateAuthorized
	a, ok := comp.authorizers[authorizerAppID]
	if !ok {
		a = &authorization{}
		comp.authorizers[authorizerAppID] = a
		comp.order = append(comp.order, authorizerAppID)
	}
	if !ok || a.revoked {
		info = msgcrypt.InfoAuthorized
		a.refreshToken = newRefreshToken()
		a.revoked = false
	}
	a.authTime = now
	code := "queryauthcode@@@" + rand.Text()
	comp.authCodes[code] = &authCode{authorizer: authorizerAppID, expiresAt: now.Add(authCodeTTL)}
	if preAuthCode == "" {
		preAuthCode = "preauthcode@@@" + rand.Text()
	}
	return msgcrypt.Event{
		AppID: comp.cfg.AppID, CreateTime: now, InfoType: info,
		AuthorizerAppID: authorizerAppID, AuthorizationCode: code,
		AuthorizationCodeExpiredTime: now.Add(authCodeTTL), PreAuthCode: preAuthCode,
	}
}

// Authorize acts as a merchant who confirms the authorization page for
// authorizerAppID: it mints an authorization code (valid 1 hour, single
// use, for api_query_auth), pushes authorized (or updateauthorized when the
// account already authorized the component) to the event URL and returns
// the code. The code is returned with the push's delivery error, if any:
// the authorization stands even when the push fails, as at WeChat.
func (s *Sim) Authorize(ctx context.Context, componentAppID, authorizerAppID string) (string, error) {
	if authorizerAppID == "" {
		return "", errors.New("wechattest: Authorize: the authorizer AppID is empty")
	}
	s.mu.Lock()
	comp, err := s.component(componentAppID)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	ev := s.authorize(comp, authorizerAppID, "")
	s.mu.Unlock()
	return ev.AuthorizationCode, s.push(ctx, componentAppID, ev)
}

// Revoke acts as a merchant who cancels the authorization in the WeChat
// console: the refresh token dies (61023), the authorizer's access tokens
// die at once (40001), and unauthorized is pushed to the event URL. It
// returns the push's delivery error; an authorizer that never authorized
// the component is an error.
func (s *Sim) Revoke(ctx context.Context, componentAppID, authorizerAppID string) error {
	s.mu.Lock()
	comp, err := s.component(componentAppID)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	a, ok := comp.authorizers[authorizerAppID]
	if !ok || a.revoked {
		s.mu.Unlock()
		return fmt.Errorf("wechattest: %s has not authorized component %s", authorizerAppID, componentAppID)
	}
	a.revoked = true
	now := s.now()
	if app, ok := s.apps[authorizerAppID]; ok {
		ch := app.chain(kindAuthorizer)
		for _, t := range []*token{ch.previous, ch.current} {
			if t != nil {
				t.kill(now)
			}
		}
	}
	ev := msgcrypt.Event{AppID: componentAppID, CreateTime: now, InfoType: msgcrypt.InfoUnauthorized, AuthorizerAppID: authorizerAppID}
	s.mu.Unlock()
	return s.push(ctx, componentAppID, ev)
}

// mintTicket mints a verify ticket for comp. Callers hold s.mu.
func (s *Sim) mintTicket(comp *component) msgcrypt.Event {
	now := s.now()
	t := "ticket@@@" + rand.Text() + rand.Text()
	comp.tickets[t] = now
	comp.latest = t
	for old, at := range comp.tickets {
		if now.Sub(at) > 2*s.opts.VerifyTicketTTL {
			delete(comp.tickets, old)
		}
	}
	return msgcrypt.Event{AppID: comp.cfg.AppID, CreateTime: now, InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: t}
}

// PushTicket mints a new component_verify_ticket for a registered
// component (valid Options.VerifyTicketTTL; earlier tickets stay valid for
// theirs) and pushes it to the event URL at once. It returns the ticket and
// the delivery error, if any; without an event URL it only mints.
func (s *Sim) PushTicket(ctx context.Context, componentAppID string) (string, error) {
	s.mu.Lock()
	comp, err := s.component(componentAppID)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	ev := s.mintTicket(comp)
	s.mu.Unlock()
	return ev.VerifyTicket, s.push(ctx, componentAppID, ev)
}

// RunPushes pushes a new verify ticket to every registered component with
// an event URL every Options.TicketPushInterval (real time, whatever
// Options.Now says), and at once to a component just added or named by
// api_start_push_ticket, until ctx is done. NewServer runs it; a bare Sim
// pushes only when the caller runs it. Delivery failures are counted
// (PushFailures), not returned.
func (s *Sim) RunPushes(ctx context.Context) {
	tick := time.NewTicker(s.opts.TicketPushInterval)
	defer tick.Stop()
	for {
		var ids []string
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.mu.Lock()
			for id := range s.comps.byID {
				ids = append(ids, id)
			}
			clear(s.comps.pending)
			s.mu.Unlock()
		case <-s.comps.wake:
			s.mu.Lock()
			for id := range s.comps.pending {
				ids = append(ids, id)
			}
			clear(s.comps.pending)
			s.mu.Unlock()
		}
		for _, id := range ids {
			_, _ = s.PushTicket(ctx, id)
		}
	}
}

// RepushLast sends the component's last push again, byte for byte (same
// timestamp, nonce and signature), as WeChat does when it did not get
// "success" in time: a receiver must treat it as a replay. It returns the
// delivery error, or an error when nothing was pushed yet.
func (s *Sim) RepushLast(ctx context.Context, componentAppID string) error {
	s.mu.Lock()
	comp, err := s.component(componentAppID)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	d := comp.last
	s.mu.Unlock()
	if d == nil {
		return fmt.Errorf("wechattest: nothing was pushed to component %s yet", componentAppID)
	}
	return s.send(ctx, componentAppID, d)
}

// push encrypts ev and delivers it to the component's event URL.
func (s *Sim) push(ctx context.Context, componentAppID string, ev msgcrypt.Event) error {
	s.mu.Lock()
	comp, err := s.component(componentAppID)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	url, crypt := comp.cfg.EventURL, comp.crypt
	ts := s.now().Unix()
	s.mu.Unlock()
	if url == "" {
		return nil
	}
	sealed, err := crypt.Seal(ev.XML(), fmt.Sprint(ts), newNonce())
	if err != nil {
		return fmt.Errorf("wechattest: seal %s push: %w", ev.InfoType, err)
	}
	d := &delivery{url: url, info: ev.InfoType, sealed: sealed}
	s.mu.Lock()
	comp.last = d
	s.mu.Unlock()
	return s.send(ctx, componentAppID, d)
}

// newNonce returns a nonce like WeChat's: a decimal number.
func newNonce() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprint(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
}
