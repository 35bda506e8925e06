package api

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/metrics"
)

// The gateway's Open Platform calls (DESIGN §11). A caller names a
// component or one of its authorizers like an app:
//
//   - Bearer <client key> and X-Wxbroker-App: ns/component_appid/authorizer_appid:
//     the authorizer's current token goes in access_token (allow pattern of
//     three parts);
//   - Bearer <client key> and X-Wxbroker-App: ns/component_appid: the
//     component_access_token goes in component_access_token on
//     /cgi-bin/component/* and in access_token elsewhere (the /wxa/ code
//     template APIs take it there);
//   - no key: access_token=<T> (or component_access_token=<T>) where T is an
//     authorizer (or component) token the broker handed out.
//
// A JSON 40001/42001/40014 to the injected token is reported
// (ReportAuthorizer, ReportComponent) and the call re-sent once, under the
// rules of app calls (gateway_transport.go: only a top-level errcode of a
// JSON answer, never on download paths, the caller's report budget pays).
// Metrics and retries are labelled with the component's appid: there are
// no per-authorizer series.

// componentParam is the query parameter that carries the component token.
const componentParam = "component_access_token"

var (
	gwNotAllowedAuthorizer = &wxError{40001, "invalid credential: this wxbroker client key's allow-list does not include that " +
		"namespace/component_appid/authorizer_appid (authorizers need a three-part pattern)", metrics.GatewayForbidden}
	gwUnknownAuthorizer = &wxError{61003, "component is not authorized by this account: wxbroker knows no authorization of that authorizer_appid " +
		"(never authorized nor imported)", metrics.GatewayNotFound}
	gwRevoked = &wxError{61003, "component is not authorized by this account: the account revoked its authorization; it must authorize again",
		metrics.GatewayNotFound}
	gwNeedsReauth = &wxError{61023, "refresh_token is invalid: the authorizer needs re-authorization in wxbroker; the account must authorize again",
		metrics.GatewayUnavailable}
)

// tokenParam is the query parameter the call's token goes in.
func (c *gwCall) tokenParam() string {
	if c.param == "" {
		return "access_token"
	}
	return c.param
}

// usePlatform reads an X-Wxbroker-App value (ns, then rest) that names an
// authorizer (three parts) or a configured component, for the Bearer
// client c.cl on canonical path p. handled is false when it names neither:
// the value is then an app's (useApp). The allow check comes before
// anything about the component is revealed: a client that may not use the
// name gets the same refusal whether it exists or not.
func (g *gateway) usePlatform(c *gwCall, p, ns, rest string) (handled bool, werr *wxError) {
	comp, auth, three := strings.Cut(rest, "/")
	op := g.a.op
	if three {
		switch {
		case comp == "" || auth == "" || strings.Contains(auth, "/"):
			return true, gwNoApp
		case !c.cl.access.AllowsAuthorizer(ns, comp, auth):
			return true, gwNotAllowedAuthorizer
		case !op.known(ns, comp):
			return true, gwUnknownApp
		}
		c.op, c.ns, c.appid, c.authorizer = true, ns, comp, auth
		return true, nil
	}
	if !op.known(ns, comp) {
		return false, nil
	}
	if !c.cl.allows(ns, comp) {
		return true, gwNotAllowed
	}
	c.op, c.ns, c.appid = true, ns, comp
	if strings.HasPrefix(p, "/cgi-bin/component/") {
		c.param = componentParam
	}
	return true, nil
}

// platformTokenCaller recognises a caller without a client key by a
// component or authorizer token the broker handed out: component_access_token
// (a component token) or access_token (an authorizer's or a component's).
// It reports false when neither names one; the call is then an app's.
func (g *gateway) platformTokenCaller(c *gwCall, q url.Values) bool {
	p := g.a.op.p
	if p == nil {
		return false
	}
	if t := q.Get(componentParam); t != "" {
		if ns, comp, auth, ok := p.ByToken(t); ok && auth == "" {
			c.op, c.ns, c.appid, c.param = true, ns, comp, componentParam
			return true
		}
	}
	if t := q.Get("access_token"); t != "" {
		if ns, comp, auth, ok := p.ByToken(t); ok {
			c.op, c.ns, c.appid, c.authorizer = true, ns, comp, auth
			return true
		}
	}
	return false
}

// platformToken puts the current token of the call's component or
// authorizer in c.token, or answers why it cannot.
func (g *gateway) platformToken(c *gwCall) *wxError {
	p := g.a.op.p
	if p == nil {
		return gwUnknownApp
	}
	var tok broker.Token
	var err error
	if c.authorizer != "" {
		tok, err = p.AuthorizerToken(c.ns, c.appid, c.authorizer)
	} else {
		tok, err = p.ComponentToken(c.ns, c.appid)
	}
	switch {
	case err == nil:
		c.token = tok.AccessToken
		return nil
	case errors.Is(err, broker.ErrUnknownComponent):
		return gwUnknownApp
	case errors.Is(err, broker.ErrUnknownAuthorizer):
		return gwUnknownAuthorizer
	case errors.Is(err, broker.ErrRevoked):
		return gwRevoked
	case errors.Is(err, broker.ErrNeedsReauthorization):
		return gwNeedsReauth
	}
	return gwUnavailable
}

// reportPlatform reports the token WeChat refused on an Open Platform call.
func (g *gateway) reportPlatform(ctx context.Context, c *gwCall, r broker.Report) (broker.Token, error) {
	p := g.a.op.p
	if p == nil {
		return broker.Token{}, broker.ErrUnknownComponent
	}
	if c.authorizer != "" {
		return p.ReportAuthorizer(ctx, c.ns, c.appid, c.authorizer, r)
	}
	return p.ReportComponent(ctx, c.ns, c.appid, r)
}
