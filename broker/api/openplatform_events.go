package api

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
)

// EventSink is what the receiver of the components' authorization-event
// URLs needs of the Open Platform engine; *broker.Platform satisfies it.
// Implementations must be safe for concurrent use.
type EventSink interface {
	// HandleEvent acts on a verified, decrypted event: it stores a ticket,
	// exchanges an authorization code, marks a revocation. It is
	// idempotent.
	HandleEvent(ctx context.Context, ns, component string, ev msgcrypt.Event) error
	// FirstSeen records key for ttl in the store every replica shares and
	// reports false when it was recorded already.
	FirstSeen(ctx context.Context, ns, component, key string, ttl time.Duration) (bool, error)
}

// Timing of the receiver. WeChat waits 5 s for "success": the receiver
// answers within EventAnswerTime of a push's arrival and lets the handling
// go on, detached from the request, for up to eventWorkTime (a slow
// api_query_auth still stores the authorizer after the answer). A push
// whose timestamp lies more than EventWindow from now, either way, is
// refused (stale_timestamp): a captured push cannot be replayed later, and
// within the window its timestamp and nonce are remembered for
// 2*EventWindow+eventReplaySlack by every replica (replay). A push whose
// handling did not end well (an error, or the replica died) is handled
// once more when it comes again: its key is claimed before the handling
// and marked handled (handledPrefix) after it succeeded; a push seen
// before and not marked is handled again, marking it first, so a push is
// handled at most twice.
const (
	EventAnswerTime  = 3 * time.Second
	EventWindow      = 5 * time.Minute
	eventWorkTime    = 30 * time.Second
	eventReplaySlack = time.Minute
	// maxEventBody bounds a push's body: WeChat's are a few hundred bytes.
	maxEventBody = 64 << 10
	// eventsRoute is the route label of the receiver in
	// wxbroker_http_request_duration_seconds{listener="public"}.
	eventsRoute = "/open/{component_appid}/events"
	// drainTime bounds how long Close waits for handling still in progress.
	drainTime = 5 * time.Second
	// handledPrefix marks, in the replay store, a push handled to the end.
	handledPrefix = "handled:"
)

// EventsOptions configures the receiver. Every field but Now is required.
type EventsOptions struct {
	Sink    EventSink
	Config  *config.Config // validated; its components' tokens and EncodingAESKeys are read
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time // nil: time.Now; for the timestamp window
}

// Events receives WeChat's pushes to the components' authorization-event
// URLs, POST /open/{component_appid}/events, on the public listener. It
// is safe for concurrent use.
type Events struct {
	sink EventSink
	log  *zap.Logger
	m    *metrics.Metrics
	now  func() time.Time
	view atomic.Pointer[eventsView] // PrepareReload swaps it
	// answer is EventAnswerTime (tests shorten it).
	answer time.Duration

	// base is the parent of the detached handling contexts; Close cancels
	// it once the handling in progress had drainTime to end.
	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// eventsView is the configured components: appid → namespace and crypter.
type eventsView struct {
	byID map[string]eventComponent
}

type eventComponent struct {
	ns    string
	crypt *msgcrypt.Crypter
}

// NewEvents builds the receiver for the components of opts.Config.
func NewEvents(opts EventsOptions) (*Events, error) {
	switch {
	case opts.Sink == nil:
		return nil, errors.New("api: EventsOptions.Sink is required")
	case opts.Config == nil:
		return nil, errors.New("api: EventsOptions.Config is required")
	case opts.Logger == nil:
		return nil, errors.New("api: EventsOptions.Logger is required")
	case opts.Metrics == nil:
		return nil, errors.New("api: EventsOptions.Metrics is required")
	}
	e := &Events{sink: opts.Sink, log: opts.Logger, m: opts.Metrics, now: opts.Now, answer: EventAnswerTime}
	if e.now == nil {
		e.now = time.Now
	}
	v, err := e.newView(opts.Config)
	if err != nil {
		return nil, err
	}
	e.view.Store(v)
	e.base, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// eventInfoTypes are the info_type label values.
var eventInfoTypes = []string{
	string(msgcrypt.InfoVerifyTicket), string(msgcrypt.InfoAuthorized), string(msgcrypt.InfoUpdateAuthorized),
	string(msgcrypt.InfoUnauthorized), metrics.EventInfoOther, metrics.EventInfoUnknown,
}

var eventResults = []string{
	metrics.EventAccepted, metrics.EventBadSignature, metrics.EventBadAppID, metrics.EventReplay,
	metrics.EventStaleTimestamp, metrics.EventMalformed, metrics.EventError,
}

// newView builds the view of cfg's components and makes every series of
// each exist at 0, so that the first refusal shows as an increase.
func (e *Events) newView(cfg *config.Config) (*eventsView, error) {
	v := &eventsView{byID: map[string]eventComponent{}}
	for _, ref := range cfg.Components() {
		crypt, err := ref.Component.Crypter()
		if err != nil {
			return nil, fmt.Errorf("api: events: %w", err)
		}
		v.byID[ref.Component.AppID] = eventComponent{ns: ref.Namespace, crypt: crypt}
		for _, it := range eventInfoTypes {
			for _, r := range eventResults {
				e.m.OpenPlatformEvents.WithLabelValues(ref.Namespace, ref.Component.AppID, it, r)
			}
		}
	}
	return v, nil
}

// PrepareReload builds the view of cfg's components; commit puts it in
// place, so a component added by a reload is received at once and a
// removed one is refused (bad_appid) and its series deleted.
func (e *Events) PrepareReload(cfg *config.Config) (commit func(), err error) {
	if cfg == nil {
		return nil, errors.New("api: events: PrepareReload needs a configuration")
	}
	next, err := e.newView(cfg)
	if err != nil {
		return nil, err
	}
	return func() {
		prev := e.view.Swap(next)
		for id, c := range prev.byID {
			if n, ok := next.byID[id]; !ok || n.ns != c.ns {
				e.m.OpenPlatformEvents.DeletePartialMatch(map[string]string{"wx_namespace": c.ns, "component_appid": id})
			}
		}
	}, nil
}

// Close waits up to drainTime for the handling of events still in
// progress, then cancels it. Call it after the public listener has shut
// down.
func (e *Events) Close() {
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(drainTime)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		e.log.Warn("open platform events still being handled at shutdown: cancelled")
	}
	e.cancel()
	<-done
}

// Handler serves POST /open/{component_appid}/events and answers 404 to
// every other path.
func (e *Events) Handler() http.Handler { return http.HandlerFunc(e.serve) }

// eventOutcome is what happened to one push: its answer and its labels.
type eventOutcome struct {
	status   int
	body     string
	result   string
	infoType string
}

func refused(status int, result, body string) eventOutcome {
	return eventOutcome{status: status, body: body, result: result, infoType: metrics.EventInfoUnknown}
}

// eventPush is one push on its way through the receiver.
type eventPush struct {
	ns, component string // labels: "unknown" for an unknown component
	counted       bool   // the handling goroutine counts it
}

func (e *Events) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id, ok := strings.CutPrefix(r.URL.Path, "/open/")
	if ok {
		id, ok = strings.CutSuffix(id, "/events")
	}
	if !ok || id == "" || strings.Contains(id, "/") {
		http.NotFound(w, r)
		e.observe(start, "unmatched", http.StatusNotFound)
		return
	}
	p := &eventPush{ns: metrics.EventUnknown, component: metrics.EventUnknown}
	out := e.receive(r, id, p, start)
	if !p.counted {
		e.m.OpenPlatformEvents.WithLabelValues(p.ns, p.component, out.infoType, out.result).Inc()
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(out.status)
	_, _ = io.WriteString(w, out.body)
	e.observe(start, eventsRoute, out.status)
}

func (e *Events) observe(start time.Time, route string, code int) {
	e.m.HTTPRequestDuration.WithLabelValues("public", route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
}

// eventEnvelope is the body of a push: <xml><AppId>…</AppId><Encrypt>…</Encrypt></xml>.
type eventEnvelope struct {
	XMLName xml.Name `xml:"xml"`
	AppID   string   `xml:"AppId"`
	Encrypt string   `xml:"Encrypt"`
}

// receive checks, decrypts and hands on one push, in this order: a
// configured component, the body and query, msg_signature, the timestamp
// window, the appids (envelope, ciphertext tail, event), the event, the
// replay store; then the handling, waited for until EventAnswerTime after
// start.
func (e *Events) receive(r *http.Request, id string, p *eventPush, start time.Time) eventOutcome {
	comp, ok := e.view.Load().byID[id]
	if !ok {
		if ce := e.log.Check(zap.DebugLevel, "open platform push for an unknown component refused"); ce != nil {
			ce.Write(zap.String("component_appid", bounded(id)))
		}
		return refused(http.StatusNotFound, metrics.EventBadAppID, "unknown component_appid")
	}
	p.ns, p.component = comp.ns, id
	log := e.log.With(zap.String("namespace", comp.ns), zap.String("component_appid", id))
	if r.Method != http.MethodPost {
		return refused(http.StatusMethodNotAllowed, metrics.EventMalformed, "POST only")
	}
	if r.ContentLength > maxEventBody {
		return refused(http.StatusRequestEntityTooLarge, metrics.EventMalformed, "body too large")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxEventBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return refused(http.StatusRequestEntityTooLarge, metrics.EventMalformed, "body too large")
		}
		return refused(http.StatusBadRequest, metrics.EventMalformed, "body could not be read")
	}
	q := r.URL.Query()
	ts, nonce, sig := q.Get("timestamp"), q.Get("nonce"), q.Get("msg_signature")
	if ts == "" || nonce == "" || sig == "" || q.Get("encrypt_type") != "aes" || len(nonce) > 64 {
		log.Warn("open platform push refused: query lacks timestamp, nonce, msg_signature or encrypt_type=aes")
		return refused(http.StatusBadRequest, metrics.EventMalformed, "timestamp, nonce, msg_signature and encrypt_type=aes are required")
	}
	var env eventEnvelope
	if xml.Unmarshal(body, &env) != nil || strings.TrimSpace(env.Encrypt) == "" {
		log.Warn("open platform push refused: body is not WeChat's encrypted envelope")
		return refused(http.StatusBadRequest, metrics.EventMalformed, "body is not <xml><AppId/><Encrypt/></xml>")
	}
	enc := strings.TrimSpace(env.Encrypt)
	if comp.crypt.Verify(sig, ts, nonce, enc) != nil {
		log.Warn("open platform push refused: msg_signature does not match (is token the component's message verification token?)")
		return refused(http.StatusForbidden, metrics.EventBadSignature, "bad signature")
	}
	if _, err := msgcrypt.CheckTimestamp(ts, e.now(), EventWindow); err != nil {
		log.Warn("open platform push refused: timestamp outside the window (replay, or a clock off)",
			zap.String("timestamp", bounded(ts)), zap.Duration("window", EventWindow))
		return refused(http.StatusForbidden, metrics.EventStaleTimestamp, "timestamp too far from now")
	}
	if a := strings.TrimSpace(env.AppID); a != "" && a != id {
		log.Warn("open platform push refused: envelope AppId is not the component of the URL", zap.String("envelope_appid", bounded(a)))
		return refused(http.StatusForbidden, metrics.EventBadAppID, "appid mismatch")
	}
	msg, err := comp.crypt.Decrypt(enc)
	switch {
	case errors.Is(err, msgcrypt.ErrAppID):
		log.Warn("open platform push refused: encrypted for another appid")
		return refused(http.StatusForbidden, metrics.EventBadAppID, "appid mismatch")
	case err != nil:
		log.Warn("open platform push refused: cannot decrypt (is encoding_aes_key the component's message decryption key?)",
			zap.Error(err))
		return refused(http.StatusBadRequest, metrics.EventMalformed, "cannot decrypt")
	}
	ev, err := msgcrypt.ParseEvent(msg)
	infoType := eventInfoLabel(ev.InfoType)
	if err != nil {
		log.Warn("open platform push refused: malformed event", zap.String("info_type", infoType), zap.Error(err))
		o := refused(http.StatusBadRequest, metrics.EventMalformed, "malformed event")
		o.infoType = infoType
		return o
	}
	if ev.AppID != id {
		log.Warn("open platform push refused: event AppId is not the component of the URL", zap.String("info_type", infoType))
		o := refused(http.StatusForbidden, metrics.EventBadAppID, "appid mismatch")
		o.infoType = infoType
		return o
	}
	log = log.With(zap.String("info_type", infoType))
	if ev.AuthorizerAppID != "" {
		log = log.With(zap.String("authorizer_appid", bounded(ev.AuthorizerAppID)))
	}
	ctx, cancel := context.WithDeadline(r.Context(), start.Add(e.answer))
	defer cancel()
	key := ts + ":" + nonce
	first, err := e.sink.FirstSeen(ctx, comp.ns, id, key, eventReplayTTL)
	if err == nil && !first {
		// Seen before: a replay, unless that handling never ended well
		// (then this is WeChat's next attempt, handled once more).
		first, err = e.sink.FirstSeen(ctx, comp.ns, id, handledPrefix+key, eventReplayTTL)
		if err == nil && first {
			log.Warn("open platform push seen before but not handled to the end: handling it once more")
		}
	}
	switch {
	case err != nil:
		// Not handled: WeChat's next attempt is handled.
		log.Warn("open platform push not handled: the replay store cannot be reached; WeChat pushes again", zap.Error(err))
		return eventOutcome{http.StatusServiceUnavailable, "retry", metrics.EventError, infoType}
	case !first:
		log.Warn("open platform push refused: replay (timestamp and nonce seen before)")
		return eventOutcome{http.StatusConflict, "replay", metrics.EventReplay, infoType}
	}
	if !ev.InfoType.Known() {
		log.Info("open platform push of an InfoType wxbroker does not act on: ignored", zap.String("info_type_value", bounded(string(ev.InfoType))))
		e.markHandled(ctx, log, comp.ns, id, key)
		return eventOutcome{http.StatusOK, "success", metrics.EventAccepted, infoType}
	}
	return e.handle(ctx, log, comp.ns, id, key, ev, p, infoType)
}

// eventReplayTTL is how long the replay store keeps a push's keys: the
// timestamp window both ways and some slack.
const eventReplayTTL = 2*EventWindow + eventReplaySlack

// markHandled records that the push key was handled to the end, so that
// it comes again only as a replay. A failure only lets one more copy of
// the push be handled (handling is idempotent): logged, not answered.
func (e *Events) markHandled(ctx context.Context, log *zap.Logger, ns, id, key string) {
	if _, err := e.sink.FirstSeen(ctx, ns, id, handledPrefix+key, eventReplayTTL); err != nil {
		log.Warn("open platform push handled, but not marked so in the replay store: a copy of it would be handled once more", zap.Error(err))
	}
}

// handle runs HandleEvent detached from the request, bounded by
// eventWorkTime, and waits for it until ctx's deadline (EventAnswerTime
// after the push arrived). Handling that outlasts the wait goes on and is
// counted when it ends; WeChat gets "success" at once, since the event is
// verified and recorded and its handling is idempotent.
func (e *Events) handle(ctx context.Context, log *zap.Logger, ns, id, key string, ev msgcrypt.Event, p *eventPush, infoType string) eventOutcome {
	wctx, wcancel := context.WithTimeout(e.base, eventWorkTime)
	done := make(chan error, 1)
	var mu sync.Mutex // orders "answered" against the goroutine's count
	answered := false
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer wcancel()
		err := e.sink.HandleEvent(wctx, ns, id, ev)
		if err == nil {
			e.markHandled(wctx, log, ns, id, key)
		}
		done <- err
		mu.Lock()
		late := answered
		mu.Unlock()
		if !late {
			return
		}
		result := metrics.EventAccepted
		if err != nil {
			result = metrics.EventError
			log.Error("open platform event handling failed after the answer", zap.Error(err))
		} else {
			log.Info("open platform event handled after the answer")
		}
		e.m.OpenPlatformEvents.WithLabelValues(ns, id, infoType, result).Inc()
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		mu.Lock()
		select {
		case err = <-done:
		default:
			answered = true
			p.counted = true
		}
		mu.Unlock()
		if answered {
			log.Warn("open platform event still being handled at the answer deadline: answered success, handling goes on",
				zap.Duration("answer_within", e.answer))
			return eventOutcome{http.StatusOK, "success", metrics.EventAccepted, infoType}
		}
	}
	switch {
	case err == nil:
		lvl := zap.InfoLevel
		if ev.InfoType == msgcrypt.InfoVerifyTicket {
			lvl = zap.DebugLevel // every 10 minutes per component
		}
		if ce := log.Check(lvl, "open platform event handled"); ce != nil {
			ce.Write()
		}
		return eventOutcome{http.StatusOK, "success", metrics.EventAccepted, infoType}
	case errors.Is(err, broker.ErrUnknownComponent):
		log.Warn("open platform push refused: the broker does not configure the component (reload in progress?)")
		return eventOutcome{http.StatusNotFound, "unknown component_appid", metrics.EventBadAppID, infoType}
	}
	log.Error("open platform event handling failed", zap.Error(err))
	return eventOutcome{http.StatusInternalServerError, "error", metrics.EventError, infoType}
}

// eventInfoLabel bounds an InfoType to the info_type label values.
func eventInfoLabel(t msgcrypt.InfoType) string {
	switch {
	case t.Known():
		return string(t)
	case t == "":
		return metrics.EventInfoUnknown
	}
	return metrics.EventInfoOther
}
