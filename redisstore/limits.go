package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gopandadoc/pandadocauth"
)

// Limits is a pandadocauth.LimitStore in Redis: the sliding logs of
// pandadocauth.Limiters shared by every replica of a fleet, so that the
// replicas together keep to PandaDoc's limits, which PandaDoc counts per
// user whatever process sends.
//
//	lim := &pandadocauth.Limiter{Store: &redisstore.Limits{Client: rdb}}
//	client := &http.Client{Transport: grants.Transport(lim)}
//
// Each request is one script, one round trip: it reports what became of
// the request's previous attempt, if any, and takes the request's slot.
// Redis's clock (TIME) is the only clock: the replicas' clocks may
// disagree, the slots do not. A 429 that a replica meets holds the
// (key, class) back in every replica, for as long as PandaDoc said, and
// lowers its limit for all of them.
//
// The log of key k and class c is a sorted set at
// Prefix+"{"+k+"}:rl:"+c (member: a slot's number, score: its time in
// microseconds), and its cooldown and learned limit a hash at the same
// key plus ":m". The braces are the grant's hash tag, the one of Store
// and Keyed: a grant's keys share a Redis Cluster slot. Keys expire once
// nothing in them matters, so an idle grant costs nothing; memory
// follows the last window's traffic.
//
// When Redis fails, the Limiter limits in its process instead and says
// so in its log once a minute; requests do not fail for it. Every
// replica must use the same Prefix and Limiter.Window, Margin and
// Limits.
//
// The methods of a Limits are safe for concurrent use by multiple
// goroutines.
type Limits struct {
	// Client is the Redis client: a *redis.Client or a
	// *redis.ClusterClient. Required.
	Client redis.UniversalClient

	// Prefix starts the keys; empty means DefaultPrefix. It must not
	// contain braces.
	Prefix string
}

var _ pandadocauth.LimitStore = (*Limits)(nil)

// Reserve implements pandadocauth.LimitStore.
func (l *Limits) Reserve(ctx context.Context, op pandadocauth.LimitOp) (pandadocauth.LimitSlot, error) {
	res, err := l.run(ctx, op, true)
	if err != nil {
		return pandadocauth.LimitSlot{}, err
	}
	return pandadocauth.LimitSlot{OK: res[0] == 1, Wait: time.Duration(res[1]) * time.Microsecond, ID: uint64(res[2])}, nil
}

// Report implements pandadocauth.LimitStore.
func (l *Limits) Report(ctx context.Context, op pandadocauth.LimitOp) error {
	if op.Reported.Outcome == pandadocauth.SlotNone {
		return nil
	}
	_, err := l.run(ctx, op, false)
	return err
}

// keys returns the log key and the hash key of (key, c).
func (l *Limits) keys(key string, c pandadocauth.Class) (log, meta string, err error) {
	if l.Client == nil {
		return "", "", errors.New("redisstore: Limits.Client is nil")
	}
	prefix := l.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return "", "", errors.New("redisstore: Limits.Prefix must not contain braces")
	}
	log = prefix + "{" + hashTag(key) + "}:rl:" + c.String()
	return log, log + ":m", nil
}

// run runs the script for op, reserving a slot or only reporting.
func (l *Limits) run(ctx context.Context, op pandadocauth.LimitOp, reserve bool) ([3]int64, error) {
	var out [3]int64
	logKey, metaKey, err := l.keys(op.Key, op.Class)
	if err != nil {
		return out, err
	}
	if op.Window < time.Microsecond {
		return out, errors.New("redisstore: Limits: the window is shorter than a microsecond")
	}
	slot := ""
	if op.Reported.Outcome != pandadocauth.SlotNone && op.Reported.Slot != 0 {
		slot = strconv.FormatUint(op.Reported.Slot, 10)
	}
	mode := "0"
	if reserve {
		mode = "1"
	}
	res, err := limitScript.Run(ctx, l.Client, []string{logKey, metaKey},
		op.Limit, micros(op.Window), micros(op.After), micros(op.MaxWait),
		slot, int(op.Reported.Outcome), micros(op.Reported.Hint), mode).Int64Slice()
	if err != nil {
		return out, fmt.Errorf("redisstore: rate limit script: %w", err)
	}
	if len(res) != 3 {
		return out, fmt.Errorf("redisstore: rate limit script: %d values, want 3", len(res))
	}
	copy(out[:], res)
	return out, nil
}

// micros converts d to whole microseconds, saturating at a year so that
// Lua's doubles hold it exactly.
func micros(d time.Duration) int64 {
	const year = 365 * 24 * time.Hour
	return int64(min(max(d, 0), year) / time.Microsecond)
}

// limitScript is pandadocauth's in-process store (limitstore.go) in Lua,
// on Redis's clock, in microseconds: the same log, cooldown and learned
// limit, so that a Limiter cannot tell them apart.
//
// KEYS[1] the log (sorted set), KEYS[2] its hash (block, learned, at,
// seq). ARGV: limit, window, after, maxwait, reported slot ("" for
// none), outcome (1 unused, 2 throttled), hint, reserve ("1" or "0").
// It returns {ok, wait, id}.
var limitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = math.max(tonumber(ARGV[1]), 0)
local window = tonumber(ARGV[2])
local after = tonumber(ARGV[3])
local maxwait = tonumber(ARGV[4])
local reported = ARGV[5]
local outcome = tonumber(ARGV[6])
local hint = tonumber(ARGV[7])
local reserve = ARGV[8] == '1'

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local m = redis.call('HMGET', KEYS[2], 'block', 'learned', 'at')
local block = tonumber(m[1]) or 0
local learned = tonumber(m[2]) or 0
local at = tonumber(m[3]) or 0

if outcome > 0 and reported ~= '' then
  redis.call('ZREM', KEYS[1], reported)
end
if outcome == 2 then
  hint = math.min(math.max(hint, 0), window)
  block = math.max(block, now + hint)
  learned = math.max(redis.call('ZCOUNT', KEYS[1], string.format('(%.0f', now - window), now), 1)
  at = now
  redis.call('HSET', KEYS[2], 'block', block, 'learned', learned, 'at', at)
end

local eff = limit
if learned > 0 then
  local clean = math.floor((now - at) / window)
  local step, top = math.floor((limit + 9) / 10), limit
  if limit == 0 then
    step = math.floor((learned + 9) / 10)
    top = learned + 10 * step
  end
  local l = learned + clean * step
  if l < top then
    eff = l
  end
end

local ok, wait, id = 0, 0, 0
if reserve then
  local slot = now + math.max(after, 0)
  slot = math.max(slot, block)
  local n = redis.call('ZCARD', KEYS[1])
  if n > 0 then
    local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    slot = math.max(slot, tonumber(last[2]))
  end
  if eff > 0 and n >= eff then
    local e = redis.call('ZRANGE', KEYS[1], n - eff, n - eff, 'WITHSCORES')
    slot = math.max(slot, tonumber(e[2]) + window)
  end
  wait = slot - now
  if wait <= maxwait then
    ok = 1
    id = redis.call('HINCRBY', KEYS[2], 'seq', 1)
    redis.call('ZADD', KEYS[1], slot, id)
  end
end

-- Keep the keys while something in them matters: the log for a window
-- after its last slot; the hash as long, and for the cooldown, the climb
-- of a learned limit (ten windows at most), and a window at least (its
-- slot numbers outlive the requests that hold them).
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep = now + window
if last[2] then
  local until_ = tonumber(last[2]) + window
  redis.call('PEXPIRE', KEYS[1], math.ceil((until_ - now) / 1000))
  keep = math.max(keep, until_)
end
keep = math.max(keep, block)
if learned > 0 then
  keep = math.max(keep, at + 10 * window)
end
if redis.call('EXISTS', KEYS[2]) == 1 or ok == 1 then
  redis.call('PEXPIRE', KEYS[2], math.ceil((keep - now) / 1000))
end
return {ok, wait, id}
`)
