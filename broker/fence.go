package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Every write the leader makes is one of these scripts. Each first checks,
// atomically with the write, that the lock still holds this leader's value and
// that the epoch key still holds this leader's epoch (INCR hands out a higher
// one to every new leader), so a deposed leader cannot overwrite anything.

// fenceLua is the common preamble: KEYS[1] lock, KEYS[2] epoch, ARGV[1] lock
// value, ARGV[2] epoch.
const fenceLua = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {-1, 0, 0}
end
`

// writeRecordLua stores a token or ticket record and publishes it.
// KEYS[3] token hash, KEYS[4] revision key, KEYS[5] intent hash; ARGV[3]
// namespace, ARGV[4] field, ARGV[5] generation known to the leader, ARGV[6]
// "1" when the value is unchanged, ARGV[7] "value\texp\tat\tsrc", ARGV[8]
// events channel, ARGV[9] the intent field this write settles ("" when it
// settles none: it stores what a credential call returned).
// Access tokens also pass KEYS[6] {p}:ns:<ns>:issued:<hash>, ARGV[10] its TTL in ms
// ("0": none) and ARGV[11] the expiry in unix ms (see issued.go).
const writeRecordLua = fenceLua + `
if ARGV[9] ~= '' then redis.call('HDEL', KEYS[5], ARGV[9]) end
local gen = tonumber(ARGV[5])
local old = redis.call('HGET', KEYS[3], ARGV[4])
if old then
  local og = tonumber(string.match(old, '^%d+\t(%d+)\t'))
  if og and og > gen then gen = og end
end
if ARGV[6] ~= '1' then gen = gen + 1 end
local t = redis.call('TIME')
local rev = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[4]) or '0')
if rev <= last then rev = last + 1 end
local revs = string.format('%d', rev)
redis.call('SET', KEYS[4], revs)
local rec = revs .. '\t' .. string.format('%d', gen) .. '\t' .. ARGV[7]
redis.call('HSET', KEYS[3], ARGV[4], rec)
if KEYS[6] and tonumber(ARGV[10]) > 0 then
  redis.call('SET', KEYS[6], ARGV[3] .. '\t' .. ARGV[4] .. '\t' .. ARGV[11], 'PX', ARGV[10])
end
redis.call('PUBLISH', ARGV[8], ARGV[3] .. '\t' .. ARGV[4] .. '\t' .. rec)
return {1, gen, rev}
`

// writeStatusLua stores an item's refresh status. KEYS[3] status hash;
// ARGV[3] field, ARGV[4] JSON.
const writeStatusLua = fenceLua + `
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
return {1, 0, 0}
`

type scripts struct {
	writeRecord, preCall, writeStatus, clearIntent, takeEpoch *redis.Script
}

func newScripts() scripts {
	return scripts{
		writeRecord: redis.NewScript(writeRecordLua),
		preCall:     redis.NewScript(preCallLua),
		writeStatus: redis.NewScript(writeStatusLua),
		clearIntent: redis.NewScript(clearIntentLua),
		takeEpoch:   redis.NewScript(takeEpochLua),
	}
}

// Outcomes of the fenced scripts.
var (
	errFenced        = errors.New("broker: fenced: lock or epoch changed hands")
	errForceInterval = fmt.Errorf("%w: force_min_interval not elapsed", ErrForceLimited)
	errForceCap      = fmt.Errorf("%w: force_daily_cap reached", ErrForceLimited)
)

// fence identifies the leadership a write belongs to.
type fence struct {
	lockValue string
	epoch     string
}

// writeRecord stores a new record for it under fence f. sameValue keeps the
// generation (a changed expiry of the same token); curGen is the generation
// the leader knows, so a Redis that lost its data does not restart the count.
func (b *Broker) writeRecord(ctx context.Context, f fence, it *item, value string, exp, at time.Time, src string, sameValue bool, curGen int64) (*record, error) {
	return b.writeRecordSettling(ctx, f, it, value, exp, at, src, sameValue, curGen, false)
}

// writeRecordSettling is writeRecord that, with settles set, also removes the
// access token's credential-call intent in the same script: the record is
// what the recorded call returned.
func (b *Broker) writeRecordSettling(ctx context.Context, f fence, it *item, value string, exp, at time.Time, src string, sameValue bool, curGen int64, settles bool) (*record, error) {
	w := recordWrite{ns: it.ns, field: it.field, value: value, exp: exp, at: at, src: src, sameValue: sameValue, curGen: curGen}
	if it.kind == KindAccessToken {
		if settles {
			w.settles = it.appid
		}
		w.issuedTTL = issuedTTL(exp, b.now())
	}
	rec, err := b.store.writeRecord(ctx, f, w)
	if err != nil {
		return nil, fmt.Errorf("write %s of appid %q: %w", it.kind, it.appid, err)
	}
	return rec, nil
}

// writeStatus stores it's refresh status under fence f.
func (b *Broker) writeStatus(ctx context.Context, f fence, it *item, st *refreshStatus) error {
	it.status.Store(st)
	if err := b.store.writeStatus(ctx, f, it.ns, it.field, st); err != nil {
		return fmt.Errorf("write status of appid %q: %w", it.appid, err)
	}
	return nil
}

// save writes a record through the fence and applies it to the cache. The
// write does not stop with the term's context: the script, not a local
// check, decides whether this leader may still write.
func (b *Broker) save(t *term, it *item, value string, exp, at time.Time, src string) (*record, error) {
	return b.saveFetched(t, it, value, exp, at, src, false)
}

// saveFetched is save for a credential a call returned (fetched set): the
// write also settles the call's intent.
func (b *Broker) saveFetched(t *term, it *item, value string, exp, at time.Time, src string, fetched bool) (*record, error) {
	if h := b.hooks.beforeWrite; h != nil {
		h(it)
	}
	cur := it.cur.Load()
	var gen int64
	same := false
	if cur != nil {
		gen, same = cur.Gen, cur.Value == value
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), b.cfg.WeChat.Timeout)
	defer cancel()
	rec, err := b.writeRecordSettling(ctx, t.fence, it, value, exp, at, src, same, gen, fetched)
	if err != nil {
		if errors.Is(err, errFenced) {
			b.rejected(t, it, err)
			return nil, err
		}
		return nil, &writeError{rec: &record{Value: value, ExpiresAt: exp, FetchedAt: at, Src: src}, err: err}
	}
	b.apply(it, rec)
	t.sched.stored(it, fetched, !same)
	return rec, nil
}

// rejected handles a fenced-out write: count it and step down.
func (b *Broker) rejected(t *term, it *item, err error) {
	if !errors.Is(err, errFenced) {
		return
	}
	b.m.FencedWritesRejected.Inc()
	b.log.Warn("fenced write rejected; stepping down", append(itemFields(it), zap.Int64("epoch", t.epoch))...)
	t.stop(errFenced)
}

func epochString(e int64) string { return strconv.FormatInt(e, 10) }
