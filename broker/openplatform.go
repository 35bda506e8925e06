package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
)

// Platform is the Open Platform room: the component_access_token and every
// authorizer's access token of each configured component
// (docs/ARCHITECTURE.md, "Open Platform"). Reads are cache lookups like Broker.AccessToken;
// events and imports are written to Redis by whichever replica receives
// them, and the leader acts on them. Its methods are safe for concurrent
// use. With no component configured every method answers
// ErrUnknownComponent.
type Platform struct {
	*core
	rep   *replica
	rpt   *reporter
	el    *elector
	cache *opCache
	lead  *opLeader
}

// Platform returns the broker's Open Platform room (never nil).
func (b *Broker) Platform() *Platform { return b.op }

// component returns the component's entry or ErrUnknownComponent.
func (p *Platform) component(ns, comp string) (*compEntry, error) {
	ce, ok := p.catalog().component(ns, comp)
	if !ok {
		return nil, ErrUnknownComponent
	}
	return ce, nil
}

// Component reports whether component appid is configured in namespace ns
// now (a reload may change it).
func (p *Platform) Component(ns, appid string) bool {
	_, ok := p.catalog().component(ns, appid)
	return ok
}

// ComponentsOf lists the component appids configured in namespace ns, sorted.
func (p *Platform) ComponentsOf(ns string) []string { return p.catalog().componentsOf(ns) }

// ComponentToken returns the component_access_token from the in-process
// cache (never one with less than a second left). Errors:
// ErrUnknownComponent, ErrNoToken.
func (p *Platform) ComponentToken(ns, comp string) (Token, error) {
	ce, err := p.component(ns, comp)
	if err != nil {
		return Token{}, err
	}
	if err := p.rep.afterPause(); err != nil {
		return Token{}, err
	}
	return p.rep.current(ce.app.token)
}

// authorizer returns an authorizer's item, or the error that says why it
// has none: ErrUnknownComponent, ErrUnknownAuthorizer, ErrRevoked,
// ErrNeedsReauthorization, or ErrNoToken (active, not yet known here).
func (p *Platform) authorizer(ns, comp, a string) (*item, error) {
	ce, err := p.component(ns, comp)
	if err != nil {
		return nil, err
	}
	if it := ce.auths[a]; it != nil {
		return it, nil
	}
	e, ok := p.cache.entry(ns, comp, a)
	switch {
	case !ok:
		return nil, ErrUnknownAuthorizer
	case e.State == StateRevoked:
		return nil, ErrRevoked
	case e.State == StateNeedsReauthorization:
		return nil, ErrNeedsReauthorization
	}
	return nil, ErrNoToken
}

// AuthorizerToken returns an authorizer's access token from the in-process
// cache. Errors: ErrUnknownComponent, ErrUnknownAuthorizer, ErrRevoked,
// ErrNeedsReauthorization, ErrNoToken.
func (p *Platform) AuthorizerToken(ns, comp, authorizer string) (Token, error) {
	it, err := p.authorizer(ns, comp, authorizer)
	if err != nil {
		return Token{}, err
	}
	if err := p.rep.afterPause(); err != nil {
		return Token{}, err
	}
	return p.rep.current(it)
}

// ReportComponent reports a component token that WeChat refused, as
// Broker.ReportFailure does for an app: a conditional refresh.
func (p *Platform) ReportComponent(ctx context.Context, ns, comp string, r Report) (Token, error) {
	ce, err := p.component(ns, comp)
	if err != nil {
		return Token{}, err
	}
	return p.report(ctx, ce.app.token, r)
}

// ReportAuthorizer reports an authorizer token that WeChat refused: a
// conditional refresh, as for an app.
func (p *Platform) ReportAuthorizer(ctx context.Context, ns, comp, authorizer string, r Report) (Token, error) {
	it, err := p.authorizer(ns, comp, authorizer)
	if err != nil {
		return Token{}, err
	}
	return p.report(ctx, it, r)
}

func (p *Platform) report(ctx context.Context, it *item, r Report) (Token, error) {
	source := r.Source
	switch source {
	case metrics.SourceClient, metrics.SourceLogin, metrics.SourceProxy, metrics.SourceBroker, metrics.SourceCompat:
	default:
		source = metrics.SourceClient
	}
	tok, accepted, err := p.rpt.conditionalRefresh(ctx, it, newClaim(r, time.Now()))
	if accepted {
		p.m.FalseReports.WithLabelValues(it.ns, it.label(), source).Inc()
	} else {
		p.m.InvalidCredential.WithLabelValues(it.ns, it.label(), source).Inc()
	}
	return tok, err
}

// ByToken names the component (authorizer "") or authorizer whose token
// this is: the current one, or the previous one within WeChat's overlap.
// It is a cache lookup.
func (p *Platform) ByToken(accessToken string) (ns, component, authorizer string, ok bool) {
	it := p.rep.index.lookup(accessToken)
	if it == nil || !isPlatform(it) || !p.catalog().has(it) {
		return "", "", "", false
	}
	now := p.now()
	cur := it.cur.Load()
	if cur == nil {
		return "", "", "", false
	}
	live := cur.Value == accessToken && now.Before(cur.ExpiresAt)
	if !live {
		prev := it.prev.Load()
		live = prev != nil && prev.Value == accessToken && now.Before(prev.ExpiresAt) && now.Before(cur.FetchedAt.Add(p.overlap))
	}
	if !live {
		return "", "", "", false
	}
	if it.kind == KindComponentToken {
		return it.ns, it.appid, "", true
	}
	return it.ns, it.owner, it.appid, true
}

// Authorizers lists a component's authorizers with their state, the expiry
// of their current token and their last error. ctx is unused: the list is
// this replica's view.
func (p *Platform) Authorizers(ctx context.Context, ns, comp string) ([]Authorizer, error) {
	ce, err := p.component(ns, comp)
	if err != nil {
		return nil, err
	}
	ids, entries := p.cache.entries(ns, comp)
	out := make([]Authorizer, 0, len(ids))
	for i, a := range ids {
		e := entries[i]
		az := Authorizer{AppID: a, State: e.State, LastError: e.LastError, AuthorizedAt: e.AuthorizedAt.UTC(), Source: e.Source}
		if it := ce.auths[a]; it != nil {
			if r := it.cur.Load(); r != nil {
				az.ExpiresAt = r.ExpiresAt.UTC()
			}
			if st := it.status.Load(); st != nil && st.LastError != nil && az.LastError == "" {
				az.LastError = st.LastError.Message
			}
		}
		out = append(out, az)
	}
	return out, nil
}

// sealer is the refresh-token cipher of the configuration now.
func (p *Platform) sealer() (*sealer, error) { return p.lead.sealer() }

// Import stores authorizer refresh tokens (a platform moving to the broker
// keeps its merchants' authorizations): each valid entry becomes an active
// authorizer, and the leader fetches its access token at once. An entry
// whose refresh token is already the stored one is Unchanged; entries with
// a malformed appid or an empty token are Rejected. Idempotent.
func (p *Platform) Import(ctx context.Context, ns, comp string, in []RefreshTokenEntry) (ImportResult, error) {
	var res ImportResult
	if _, err := p.component(ns, comp); err != nil {
		return res, err
	}
	s, err := p.sealer()
	if err != nil {
		return res, err
	}
	have, err := p.refreshTokens(ctx, ns, comp, s)
	if err != nil {
		return res, err
	}
	seen := map[string]bool{}
	grants := map[string]azEntry{}
	for _, e := range in {
		switch {
		case !authorizerAppID.MatchString(e.AuthorizerAppID):
			res.Rejected = append(res.Rejected, ImportProblem{e.AuthorizerAppID, `authorizer_appid must be "wx" followed by 16 lowercase hex digits`})
			continue
		case strings.TrimSpace(e.RefreshToken) == "" || !validValue(e.RefreshToken):
			res.Rejected = append(res.Rejected, ImportProblem{e.AuthorizerAppID, "authorizer_refresh_token is empty or holds a tab or line break"})
			continue
		case seen[e.AuthorizerAppID]:
			res.Rejected = append(res.Rejected, ImportProblem{e.AuthorizerAppID, "listed twice"})
			continue
		}
		seen[e.AuthorizerAppID] = true
		if cur, ok := have[e.AuthorizerAppID]; ok && cur == e.RefreshToken {
			res.Unchanged++
			continue
		}
		grants[e.AuthorizerAppID] = azEntry{State: StateActive, Source: SourceImport, AuthorizedAt: p.now(), Seed: seedRefresh + s.seal(e.RefreshToken)}
	}
	if err := opStoreOf(p.store).opGrants(ctx, ns, comp, grants); err != nil {
		return res, fmt.Errorf("import %d authorizers: %w", len(grants), err)
	}
	res.Imported = len(grants)
	if res.Imported > 0 {
		p.log.Info("authorizer refresh tokens imported", zapNS(ns), zap.String("component_appid", comp),
			zap.Int("imported", res.Imported), zap.Int("unchanged", res.Unchanged), zap.Int("rejected", len(res.Rejected)))
	}
	return res, nil
}

// refreshTokens reads the current refresh token of every active authorizer
// of comp from Redis (a pending seed, else its record), decrypted.
func (p *Platform) refreshTokens(ctx context.Context, ns, comp string, s *sealer) (map[string]string, error) {
	raw, err := opStoreOf(p.store).opAuthorizers(ctx, ns, comp)
	if err != nil {
		return nil, fmt.Errorf("read authorizers: %w", err)
	}
	recs, err := p.store.records(ctx)
	if err != nil {
		return nil, fmt.Errorf("read authorizer tokens: %w", err)
	}
	out := map[string]string{}
	for a, v := range raw {
		e, err := parseAzEntry(v)
		if err != nil || e.State != StateActive {
			continue
		}
		if sealed, ok := strings.CutPrefix(e.Seed, seedRefresh); ok {
			if rt, err := s.open(sealed); err == nil {
				out[a] = rt
				continue
			}
		}
		if r, err := parseRecord(recs[ns][comp+"/"+a+"/"+KindAuthorizerToken]); err == nil && r.Sealed != "" {
			if rt, err := s.open(r.Sealed); err == nil {
				out[a] = rt
			}
		}
	}
	return out, nil
}

// Export returns the refresh token of every active authorizer of comp, in
// plaintext (admin only: for a migration). Authorizers whose token cannot
// be read are left out.
func (p *Platform) Export(ctx context.Context, ns, comp string) ([]RefreshTokenEntry, error) {
	if _, err := p.component(ns, comp); err != nil {
		return nil, err
	}
	s, err := p.sealer()
	if err != nil {
		return nil, err
	}
	have, err := p.refreshTokens(ctx, ns, comp, s)
	if err != nil {
		return nil, err
	}
	ids, _ := p.cache.entries(ns, comp)
	out := make([]RefreshTokenEntry, 0, len(have))
	listed := map[string]bool{}
	for _, a := range ids {
		if rt, ok := have[a]; ok {
			out = append(out, RefreshTokenEntry{AuthorizerAppID: a, RefreshToken: rt})
			listed[a] = true
		}
	}
	for a, rt := range have {
		if !listed[a] {
			out = append(out, RefreshTokenEntry{AuthorizerAppID: a, RefreshToken: rt})
		}
	}
	p.log.Warn("authorizer refresh tokens exported", zapNS(ns), zap.String("component_appid", comp), zap.Int("count", len(out)))
	return out, nil
}

// PreAuthURL creates a pre-authorization code (api_create_preauthcode) and
// returns the authorization link for a new merchant
// (<page>/cgi-bin/componentloginpage?component_appid=…&pre_auth_code=…&redirect_uri=…&auth_type=3).
// The page is https://mp.weixin.qq.com when wechat.base_url is WeChat's
// API domain, else wechat.base_url itself (the simulator serves the page).
func (p *Platform) PreAuthURL(ctx context.Context, ns, comp, redirectURI string) (string, error) {
	if _, err := p.component(ns, comp); err != nil {
		return "", err
	}
	if p.lead.wx == nil {
		return "", errNoPlatformWeChat
	}
	var code wechat.PreAuthCode
	for attempt := 0; ; attempt++ {
		tok, err := p.ComponentToken(ns, comp)
		if err != nil {
			return "", err
		}
		code, err = p.lead.wx.PreAuthCode(ctx, tok.AccessToken, comp)
		var ae *wechat.APIError
		if err != nil && attempt == 0 && errors.As(err, &ae) && ae.InvalidCredential() {
			if _, rerr := p.ReportComponent(ctx, ns, comp, Report{Token: tok.AccessToken, Source: metrics.SourceBroker, Proof: Proven}); rerr != nil {
				return "", rerr
			}
			continue
		}
		if err != nil {
			return "", fmt.Errorf("create a pre-authorization code: %w", err)
		}
		break
	}
	return loginPage(p.cfg.WeChat.BaseURL) + "/cgi-bin/componentloginpage?component_appid=" + url.QueryEscape(comp) +
		"&pre_auth_code=" + url.QueryEscape(code.Code) + "&redirect_uri=" + url.QueryEscape(redirectURI) + "&auth_type=3", nil
}

// loginPage is the origin of WeChat's authorization page for base, the
// configured API base URL.
func loginPage(base string) string {
	base = strings.TrimRight(base, "/")
	if u, err := url.Parse(base); err == nil && strings.HasSuffix(u.Hostname(), ".weixin.qq.com") {
		return "https://mp.weixin.qq.com"
	}
	return base
}

// HandleEvent stores an already decrypted and verified authorization event
// of comp: a verify ticket (the latest CreateTime wins; valid 12 h); an
// authorized or updateauthorized event (the authorization code is stored,
// sealed, and the leader exchanges it at once with api_query_auth: a new
// refresh token and access token); unauthorized (revoked: no longer
// refreshed nor served). Idempotent; other InfoTypes are ignored.
func (p *Platform) HandleEvent(ctx context.Context, ns, comp string, ev msgcrypt.Event) error {
	if _, err := p.component(ns, comp); err != nil {
		return err
	}
	st := opStoreOf(p.store)
	at := ev.CreateTime
	if at.IsZero() {
		at = p.now()
	}
	switch ev.InfoType {
	case msgcrypt.InfoVerifyTicket:
		if !validValue(ev.VerifyTicket) {
			return errors.New("broker: component_verify_ticket event without a usable ticket")
		}
		if _, err := st.opStoreTicket(ctx, ns, comp, ev.VerifyTicket, at); err != nil {
			return fmt.Errorf("store the verify ticket: %w", err)
		}
		p.cache.setTicket(ns, comp, ev.VerifyTicket, at)
		return nil
	case msgcrypt.InfoAuthorized, msgcrypt.InfoUpdateAuthorized:
		if !authorizerAppID.MatchString(ev.AuthorizerAppID) || !validValue(ev.AuthorizationCode) {
			return errors.New("broker: authorization event without a valid AuthorizerAppid and AuthorizationCode")
		}
		s, err := p.sealer()
		if err != nil {
			return err
		}
		cur, ok, err := st.opAuthorizer(ctx, ns, comp, ev.AuthorizerAppID)
		if err != nil {
			return fmt.Errorf("read authorizer %s: %w", ev.AuthorizerAppID, err)
		}
		if ok && cur.State == StateActive && cur.Source == SourceEvent && cur.AuthorizedAt.Equal(at.Truncate(time.Millisecond)) {
			return nil // the same event again (a revocation in the same second is followed)
		}
		entry := azEntry{State: StateActive, Source: SourceEvent, AuthorizedAt: at, Seed: seedCode + s.seal(ev.AuthorizationCode)}
		if _, err := st.opGrant(ctx, ns, comp, ev.AuthorizerAppID, entry); err != nil {
			return fmt.Errorf("store authorizer %s: %w", ev.AuthorizerAppID, err)
		}
		p.log.Info("authorizer authorized the component", zapNS(ns), zap.String("component_appid", comp),
			zap.String("authorizer_appid", ev.AuthorizerAppID), zap.String("info_type", string(ev.InfoType)))
		return nil
	case msgcrypt.InfoUnauthorized:
		if !authorizerAppID.MatchString(ev.AuthorizerAppID) {
			return errors.New("broker: unauthorized event without a valid AuthorizerAppid")
		}
		cur, ok, err := st.opAuthorizer(ctx, ns, comp, ev.AuthorizerAppID)
		if err != nil {
			return fmt.Errorf("read authorizer %s: %w", ev.AuthorizerAppID, err)
		}
		if ok && (cur.State == StateRevoked || cur.AuthorizedAt.After(at)) {
			return nil // already revoked, or authorized again after this event
		}
		entry := azEntry{State: StateRevoked, Source: cur.Source, AuthorizedAt: cur.AuthorizedAt}
		if entry.Source == "" {
			entry.Source = SourceEvent
		}
		if _, err := st.opGrant(ctx, ns, comp, ev.AuthorizerAppID, entry); err != nil {
			return fmt.Errorf("store authorizer %s: %w", ev.AuthorizerAppID, err)
		}
		p.log.Warn("authorizer revoked its authorization: no longer refreshed nor served", zapNS(ns),
			zap.String("component_appid", comp), zap.String("authorizer_appid", ev.AuthorizerAppID))
		return nil
	}
	return nil
}

// FirstSeen records key (e.g. an event's nonce and timestamp) in the
// replay store shared by every replica (SET NX PX): false when key was seen
// within ttl.
func (p *Platform) FirstSeen(ctx context.Context, ns, comp, key string, ttl time.Duration) (bool, error) {
	if _, err := p.component(ns, comp); err != nil {
		return false, err
	}
	sum := sha256.Sum256([]byte(key))
	return opStoreOf(p.store).opFirst(ctx, p.store.keys.opSeen(ns, comp, hex.EncodeToString(sum[:16])), ttl)
}

// swapAuthorizers returns opCache.swap: install a catalog with set as the
// active authorizers, under mu (the reload lock), load the new
// authorizers' records and wake the leader's scheduler.
func (p *Platform) swapAuthorizers(mu *sync.Mutex) func(set authSet) {
	return func(set authSet) {
		mu.Lock()
		defer mu.Unlock()
		cur := p.catalog()
		next, err := newCatalogWith(cur.cfg, cur, set)
		if err != nil {
			p.log.Error("cannot rebuild the catalog with the authorizers", zapErr(err))
			return
		}
		next.adopt()
		p.cat.Store(next)
		var added []*item
		removed := 0
		for _, it := range next.items {
			if !cur.has(it) {
				added = append(added, it)
			}
		}
		for _, it := range cur.items {
			if !next.has(it) {
				removed++
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Leader.LockTTL)
		defer cancel()
		if len(added) > 64 {
			_ = p.rep.reconcile(ctx)
		} else {
			for _, it := range added {
				_ = p.rep.refreshItem(ctx, it)
			}
		}
		if t := p.el.term.Load(); t != nil {
			if s := t.sched(); s != nil {
				s.wake()
			}
		}
		p.log.Debug("authorizers changed", zap.Int("added", len(added)), zap.Int("removed", removed))
	}
}

// reloaded follows a reload: a removed component's series go, an added
// component's state is read at once.
func (p *Platform) reloaded(prev, next *catalog) {
	added := false
	for ns, byComp := range prev.comps {
		for comp := range byComp {
			if _, ok := next.component(ns, comp); !ok {
				p.m.OpenPlatform.DropComponent(ns, comp)
				m := map[string]string{"wx_namespace": ns, "appid": comp}
				p.m.TokenRefresh.DeletePartialMatch(m)
				p.m.WeChatErrors.DeletePartialMatch(m)
				p.log.Info("component removed by reload: it and its authorizers are no longer refreshed or served; redis keeps their state",
					zapNS(ns), zap.String("component_appid", comp))
			}
		}
	}
	for ns, byComp := range next.comps {
		for comp := range byComp {
			if _, ok := prev.component(ns, comp); !ok {
				p.m.OpenPlatform.SeedComponent(ns, comp)
				added = true
			}
		}
	}
	if added {
		// Not under the reload lock the caller holds: a new authorizer set
		// takes it (swapAuthorizers).
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Leader.LockTTL)
			defer cancel()
			if err := p.cache.sync(ctx); err != nil {
				p.log.Warn("reload: cannot read the new components' state from redis yet; the next reconcile will", zapErr(err))
			}
		}()
	}
}
