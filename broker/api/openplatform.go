package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// Platform is what the internal API and the gateway need of the Open
// Platform engine (third-party platform: a component's token and the
// tokens of the accounts that authorized it). *broker.Platform
// (Broker.Platform) satisfies it. Implementations must be safe for
// concurrent use.
type Platform interface {
	ComponentToken(ns, component string) (broker.Token, error)
	AuthorizerToken(ns, component, authorizer string) (broker.Token, error)
	ReportComponent(ctx context.Context, ns, component string, r broker.Report) (broker.Token, error)
	ReportAuthorizer(ctx context.Context, ns, component, authorizer string, r broker.Report) (broker.Token, error)
	// ByToken names the component (authorizer "") or the authorizer of a
	// token the broker handed out, current or previous.
	ByToken(accessToken string) (ns, component, authorizer string, ok bool)
	Authorizers(ctx context.Context, ns, component string) ([]broker.Authorizer, error)
	Import(ctx context.Context, ns, component string, in []broker.RefreshTokenEntry) (broker.ImportResult, error)
	Export(ctx context.Context, ns, component string) ([]broker.RefreshTokenEntry, error)
	PreAuthURL(ctx context.Context, ns, component, redirectURI string) (string, error)
	// Component reports whether ns configures the component now.
	Component(ns, appid string) bool
}

// Audit events of the Open Platform routes. An authorizer's line names
// "component_appid/authorizer_appid" as its appid.
const (
	eventComponentToken       = "component_token"
	eventComponentInvalidate  = "component_invalidate"
	eventAuthorizerToken      = "authorizer_token"
	eventAuthorizerInvalidate = "authorizer_invalidate"
	eventAuthorizers          = "authorizers"
	eventAuthorizersImport    = "authorizers_import"
	eventAuthorizersExport    = "authorizers_export"
	eventPreAuthURL           = "preauth_url"
)

// Error codes of the Open Platform routes beyond those of errors.go; like
// them they double as the result label of wxbroker_token_requests_total.
const (
	codeRevoked              = "revoked"
	codeNeedsReauthorization = "needs_reauthorization"
)

var (
	errUnknownComponent  = &apiError{http.StatusNotFound, codeNotFound, "unknown namespace or component_appid"}
	errUnknownAuthorizer = &apiError{http.StatusNotFound, codeNotFound,
		"unknown authorizer: this account never authorized the component and was not imported"}
	errRevoked = &apiError{http.StatusGone, codeRevoked,
		"the account revoked its authorization of this component: it must authorize again (preauth_url)"}
	errNeedsReauthorization = &apiError{http.StatusConflict, codeNeedsReauthorization,
		"the authorizer needs re-authorization: WeChat refused its refresh token (61023); the account must authorize again (preauth_url)"}
	errNoForbiddenAuthorizer = &apiError{http.StatusForbidden, codeForbidden,
		"this client key may not read that authorizer: it needs an allow pattern namespace/component_appid/authorizer_appid (* allowed in any part)"}
)

// platformError maps an Open Platform error of the engine to its answer;
// other errors pass on to classify.
func platformError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, broker.ErrUnknownComponent):
		return errUnknownComponent
	case errors.Is(err, broker.ErrUnknownAuthorizer):
		return errUnknownAuthorizer
	case errors.Is(err, broker.ErrRevoked):
		return errRevoked
	case errors.Is(err, broker.ErrNeedsReauthorization):
		return errNeedsReauthorization
	}
	return err
}

// Import limits: a request holds at most maxImportEntries entries (the page
// size of api_get_authorizer_list) within the listener's MaxBodyBytes
// (64 KiB: about 500 entries of WeChat's refresh tokens); a larger set is
// imported in batches, which is safe because an import is idempotent.
const maxImportEntries = 500

// appIDShape is what WeChat AppIDs look like: "wx" and 16 lowercase hex
// digits.
var appIDShape = regexp.MustCompile(`^wx[0-9a-f]{16}$`)

// platformRoutes serves the Open Platform routes (component and authorizer
// tokens, authorizers, import/export, preauth_url) on the internal
// listener, and lends the gateway what it needs to recognise components
// and authorizers. A route group like tokenRoutes: it shares the API's
// desk (who calls, the audit line of a request).
type platformRoutes struct {
	desk *desk    // a named field: its methods would count as this type's
	p    Platform // nil: no Open Platform engine; every component is unknown
	log  *zap.Logger
	now  func() time.Time

	// reports bounds, per component (all its authorizers together), the
	// gateway's reports for callers that present a token instead of a
	// client key, as appInfo.reports does per app.
	reports sync.Map // componentKey → *rate.Limiter
}

type componentKey struct{ ns, component string }

// routes registers the routes through add (API.newEcho's).
func (r *platformRoutes) routes(add addFunc) {
	const comp = "/v1/namespaces/:ns/components/:component"
	add(http.MethodGet, comp+"/access_token", r.componentToken)
	add(http.MethodPost, comp+"/access_token/invalidate", r.componentInvalidate)
	add(http.MethodGet, comp+"/authorizers", r.authorizers)
	add(http.MethodPost, comp+"/authorizers", r.importAuthorizers)
	add(http.MethodGet, comp+"/authorizers/export", r.exportAuthorizers)
	add(http.MethodGet, comp+"/authorizers/:authorizer/access_token", r.authorizerToken)
	add(http.MethodPost, comp+"/authorizers/:authorizer/access_token/invalidate", r.authorizerInvalidate)
	add(http.MethodGet, comp+"/preauth_url", r.preAuthURL)
}

// known reports whether ns configures component now.
func (r *platformRoutes) known(ns, component string) bool {
	return r.p != nil && r.p.Component(ns, component)
}

// reportLimiter returns the report bucket of a component for gateway
// callers that present a token.
func (r *platformRoutes) reportLimiter(ns, component string) *rate.Limiter {
	k := componentKey{ns, component}
	if l, ok := r.reports.Load(k); ok {
		return l.(*rate.Limiter)
	}
	l, _ := r.reports.LoadOrStore(k, newReportLimiter(config.DefaultInvalidatePerMinute))
	return l.(*rate.Limiter)
}

// authorizeComponent authenticates the request and checks the two-part name
// ns/component against the client's allow patterns, before anything about
// the component is looked up.
func (r *platformRoutes) authorizeComponent(c echo.Context, ns, component string) (*client, error) {
	cl, err := r.desk.authenticate(c)
	if err != nil {
		return nil, err
	}
	if !cl.allows(ns, component) {
		return cl, errForbidden
	}
	if !r.known(ns, component) {
		return cl, errUnknownComponent
	}
	return cl, nil
}

// authorizeAuthorizer is authorizeComponent for the three-part name
// ns/component/authorizer.
func (r *platformRoutes) authorizeAuthorizer(c echo.Context, ns, component, authorizer string) (*client, error) {
	cl, err := r.desk.authenticate(c)
	if err != nil {
		return nil, err
	}
	if !cl.access.AllowsAuthorizer(ns, component, authorizer) {
		return cl, errNoForbiddenAuthorizer
	}
	if !r.known(ns, component) {
		return cl, errUnknownComponent
	}
	return cl, nil
}

// admin authenticates an admin client that may also read ns/component.
func (r *platformRoutes) admin(c echo.Context, ns, component string) (*client, error) {
	cl, err := r.desk.authenticate(c)
	if err != nil {
		return nil, err
	}
	if !cl.admin {
		return cl, errAdminOnly
	}
	if !cl.allows(ns, component) {
		return cl, errForbidden
	}
	if !r.known(ns, component) {
		return cl, errUnknownComponent
	}
	return cl, nil
}

// recordOp counts a token request of a component or one of its authorizers
// (under the component's appid: there are no per-authorizer series) and
// writes its audit line; auditID is the appid the line names.
func (r *platformRoutes) recordOp(c echo.Context, event string, cl *client, ns, component, auditID string, err error, token string) {
	result := metrics.RequestOK
	if err != nil {
		result = classify(err).code
	}
	if event != eventAuthorizers && event != eventAuthorizersImport && event != eventAuthorizersExport && event != eventPreAuthURL {
		r.countOp(ns, component, result)
	}
	r.desk.auditLine(c, event, cl, ns, auditID, result, token)
}

// countOp counts in wxbroker_token_requests_total; only configured
// components become label values.
func (r *platformRoutes) countOp(ns, component, result string) {
	if !r.known(ns, component) {
		component = unknownApp
		if !r.desk.view.Load().nsKnown[ns] {
			ns = unknownNamespace
		}
	}
	r.desk.m.TokenRequests.WithLabelValues(ns, component, result).Inc()
}

// writeToken answers a token in the JSON of an app token.
func (r *platformRoutes) writeToken(c echo.Context, tok broker.Token) error {
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendTokenJSON(*buf, tok.AccessToken, tok.ExpiresAt, r.now(), tok.Generation)
	return writeJSON(c, http.StatusOK, *buf)
}

// componentToken serves GET …/components/:component/access_token.
func (r *platformRoutes) componentToken(c echo.Context) error {
	ns, comp := c.Param("ns"), c.Param("component")
	cl, err := r.authorizeComponent(c, ns, comp)
	var tok broker.Token
	if err == nil {
		tok, err = r.p.ComponentToken(ns, comp)
		err = platformError(err)
	}
	r.recordOp(c, eventComponentToken, cl, ns, comp, comp, err, tok.AccessToken)
	if err != nil {
		return err
	}
	return r.writeToken(c, tok)
}

// componentInvalidate serves POST …/components/:component/access_token/invalidate:
// a conditional refresh of the component token, as for apps.
func (r *platformRoutes) componentInvalidate(c echo.Context) error {
	ns, comp := c.Param("ns"), c.Param("component")
	cl, err := r.authorizeComponent(c, ns, comp)
	var tok broker.Token
	if err == nil {
		tok, err = r.report(c, cl, func(ctx context.Context, rep broker.Report) (broker.Token, error) {
			return r.p.ReportComponent(ctx, ns, comp, rep)
		})
	}
	r.recordOp(c, eventComponentInvalidate, cl, ns, comp, comp, err, tok.AccessToken)
	if err != nil {
		return err
	}
	return r.writeToken(c, tok)
}

// authorizerToken serves GET …/authorizers/:authorizer/access_token.
func (r *platformRoutes) authorizerToken(c echo.Context) error {
	ns, comp, auth := c.Param("ns"), c.Param("component"), c.Param("authorizer")
	cl, err := r.authorizeAuthorizer(c, ns, comp, auth)
	var tok broker.Token
	if err == nil {
		tok, err = r.p.AuthorizerToken(ns, comp, auth)
		err = platformError(err)
	}
	r.recordOp(c, eventAuthorizerToken, cl, ns, comp, comp+"/"+auth, err, tok.AccessToken)
	if err != nil {
		return err
	}
	return r.writeToken(c, tok)
}

// authorizerInvalidate serves POST …/authorizers/:authorizer/access_token/invalidate.
func (r *platformRoutes) authorizerInvalidate(c echo.Context) error {
	ns, comp, auth := c.Param("ns"), c.Param("component"), c.Param("authorizer")
	cl, err := r.authorizeAuthorizer(c, ns, comp, auth)
	var tok broker.Token
	if err == nil {
		tok, err = r.report(c, cl, func(ctx context.Context, rep broker.Report) (broker.Token, error) {
			return r.p.ReportAuthorizer(ctx, ns, comp, auth, rep)
		})
	}
	r.recordOp(c, eventAuthorizerInvalidate, cl, ns, comp, comp+"/"+auth, err, tok.AccessToken)
	if err != nil {
		return err
	}
	return r.writeToken(c, tok)
}

// report reads an invalidation body and makes the report under the rules
// of the app route (doInvalidate): the client needs clients[].invalidate,
// its word is checked with WeChat first, its budget pays only for a report
// that costs WeChat a call.
func (r *platformRoutes) report(c echo.Context, cl *client,
	send func(context.Context, broker.Report) (broker.Token, error)) (broker.Token, error) {
	if err := cl.mayReport(); err != nil {
		return broker.Token{}, err
	}
	var req invalidateRequest
	if err := decodeJSON(c, &req); err != nil {
		return broker.Token{}, err
	}
	if req.AccessToken == "" {
		return broker.Token{}, badRequest(`body must be {"access_token": "<the token that failed>"}`)
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), invalidateTimeout)
	defer cancel()
	tok, err := send(ctx, broker.Report{Token: req.AccessToken, Source: metrics.SourceClient,
		Proof: broker.Unproven, Charge: chargeTo(cl.reports)})
	return tok, platformError(err)
}

// authorizerList is the answer of GET …/authorizers.
type authorizerList struct {
	ComponentAppID string              `json:"component_appid"`
	Authorizers    []broker.Authorizer `json:"authorizers"`
}

// authorizers serves GET …/components/:component/authorizers.
func (r *platformRoutes) authorizers(c echo.Context) error {
	ns, comp := c.Param("ns"), c.Param("component")
	cl, err := r.authorizeComponent(c, ns, comp)
	var list []broker.Authorizer
	if err == nil {
		list, err = r.p.Authorizers(c.Request().Context(), ns, comp)
		err = platformError(err)
	}
	r.recordOp(c, eventAuthorizers, cl, ns, comp, comp, err, "")
	if err != nil {
		return err
	}
	if list == nil {
		list = []broker.Authorizer{}
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, authorizerList{ComponentAppID: comp, Authorizers: list})
}

// importAuthorizers serves POST …/components/:component/authorizers (admin):
// [{authorizer_appid, authorizer_refresh_token}], idempotent. The answer
// counts what was stored and names the refused entries, never a refresh
// token.
func (r *platformRoutes) importAuthorizers(c echo.Context) error {
	ns, comp := c.Param("ns"), c.Param("component")
	cl, err := r.admin(c, ns, comp)
	var res broker.ImportResult
	if err == nil {
		res, err = r.doImport(c, ns, comp)
	}
	r.recordOp(c, eventAuthorizersImport, cl, ns, comp, comp, err, "")
	if err != nil {
		return err
	}
	if res.Imported > 0 || len(res.Rejected) > 0 {
		r.log.Info("authorizer refresh tokens imported", zap.String("client", cl.name), zap.String("namespace", ns),
			zap.String("component_appid", comp), zap.Int("imported", res.Imported), zap.Int("unchanged", res.Unchanged),
			zap.Int("rejected", len(res.Rejected)))
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, res)
}

func (r *platformRoutes) doImport(c echo.Context, ns, comp string) (broker.ImportResult, error) {
	var in []broker.RefreshTokenEntry
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return broker.ImportResult{}, errTooLarge
		}
		// The decoder's message may quote the body: never echo it.
		return broker.ImportResult{}, badRequest(`body must be a JSON array [{"authorizer_appid": "wx…", "authorizer_refresh_token": "…"}] with no other fields`)
	}
	if _, err := dec.Token(); err == nil {
		return broker.ImportResult{}, badRequest("request body has data after the JSON array")
	}
	switch {
	case len(in) == 0:
		return broker.ImportResult{}, badRequest("the array is empty: nothing to import")
	case len(in) > maxImportEntries:
		return broker.ImportResult{}, badRequest(fmt.Sprintf("the array has %d entries; import at most %d per request (an import is idempotent: send batches)", len(in), maxImportEntries))
	}
	var res broker.ImportResult
	valid := make([]broker.RefreshTokenEntry, 0, len(in))
	seen := make(map[string]string, len(in))
	for _, e := range in {
		problem := ""
		switch prev, dup := seen[e.AuthorizerAppID]; {
		case !appIDShape.MatchString(e.AuthorizerAppID):
			problem = `authorizer_appid must be "wx" followed by 16 lowercase hex digits`
		case e.RefreshToken == "":
			problem = "authorizer_refresh_token is empty"
		case len(e.RefreshToken) > 512:
			problem = "authorizer_refresh_token is longer than 512 bytes"
		case dup && prev != e.RefreshToken:
			problem = "listed twice with different refresh tokens"
		case dup:
			continue // the same entry twice: once is enough
		}
		if problem != "" {
			res.Rejected = append(res.Rejected, broker.ImportProblem{AuthorizerAppID: boundedID(e.AuthorizerAppID), Problem: problem})
			continue
		}
		seen[e.AuthorizerAppID] = e.RefreshToken
		valid = append(valid, e)
	}
	if len(valid) == 0 {
		return res, nil
	}
	got, err := r.p.Import(c.Request().Context(), ns, comp, valid)
	if err != nil {
		return broker.ImportResult{}, platformError(err)
	}
	got.Rejected = append(res.Rejected, got.Rejected...)
	return got, nil
}

// boundedID is an authorizer_appid from the request as an answer may quote
// it: at most 64 bytes.
func boundedID(s string) string { return bounded(s) }

// exportAuthorizers serves GET …/components/:component/authorizers/export
// (admin): every stored refresh token in plaintext, for a migration. The
// only route that returns refresh tokens.
func (r *platformRoutes) exportAuthorizers(c echo.Context) error {
	ns, comp := c.Param("ns"), c.Param("component")
	cl, err := r.admin(c, ns, comp)
	var out []broker.RefreshTokenEntry
	if err == nil {
		out, err = r.p.Export(c.Request().Context(), ns, comp)
		err = platformError(err)
	}
	r.recordOp(c, eventAuthorizersExport, cl, ns, comp, comp, err, "")
	if err != nil {
		return err
	}
	r.log.Warn("authorizer refresh tokens exported", zap.String("client", cl.name), zap.String("namespace", ns),
		zap.String("component_appid", comp), zap.Int("authorizers", len(out)))
	if out == nil {
		out = []broker.RefreshTokenEntry{}
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, out)
}

// preAuthAnswer is the answer of GET …/preauth_url.
type preAuthAnswer struct {
	PreAuthURL string `json:"preauth_url"`
}

// preAuthURL serves GET …/components/:component/preauth_url?redirect_uri=:
// the authorization link for a new merchant (a new pre_auth_code each
// time; WeChat lets it live 30 minutes).
func (r *platformRoutes) preAuthURL(c echo.Context) error {
	ns, comp := c.Param("ns"), c.Param("component")
	cl, err := r.authorizeComponent(c, ns, comp)
	var link string
	if err == nil {
		err = checkRedirectURI(c.QueryParam("redirect_uri"))
	}
	if err == nil {
		link, err = r.p.PreAuthURL(c.Request().Context(), ns, comp, c.QueryParam("redirect_uri"))
		err = platformError(err)
	}
	r.recordOp(c, eventPreAuthURL, cl, ns, comp, comp, err, "")
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, preAuthAnswer{PreAuthURL: link})
}

// checkRedirectURI accepts the absolute http(s) URL WeChat sends the
// merchant back to after the authorization (its host must be the one set
// as the component's authorization domain in the Open Platform console).
func checkRedirectURI(raw string) error {
	if raw == "" {
		return badRequest("redirect_uri is required: the absolute http(s) URL WeChat sends the merchant back to after authorizing")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || len(raw) > 2048 {
		return badRequest("redirect_uri must be an absolute http(s) URL (no user info, at most 2048 bytes)")
	}
	return nil
}
