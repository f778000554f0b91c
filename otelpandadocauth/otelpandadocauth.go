package otelpandadocauth

import (
	"context"
	"errors"
	"fmt"

	"github.com/gopandadoc/pandadocauth"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope name of the meters and tracers
// this package creates: its import path.
const ScopeName = "github.com/gopandadoc/pandadocauth/otelpandadocauth"

// Version returns the version of this package, the instrumentation
// scope's version.
func Version() string { return "0.1.0" }

// The attribute keys. Their values are enum names ("refreshed",
// "expired", "ok") and booleans; the grant's key only with
// WithGrantAttribute. No token or secret is ever an attribute value.
const (
	keyGrant       = attribute.Key("grant")
	keyReason      = attribute.Key("reason")
	keyOutcome     = attribute.Key("outcome")
	keyRetry       = attribute.Key("retry")
	keyInvalidated = attribute.Key("invalidated")
	keyAttempts    = attribute.Key("attempts")
	keyWaiters     = attribute.Key("waiters")
	keyErrorType   = attribute.Key("error.type")
)

// spanName is the name of a refresh's span.
const spanName = "pandadocauth.refresh"

// durationBuckets are the bucket boundaries, in seconds, of the duration
// histograms: OpenTelemetry's HTTP duration buckets, up to the one-minute
// bound of a refresh.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60}

// waiterBuckets are the bucket boundaries of the waiters histogram.
var waiterBuckets = []float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}

// An Option configures NewObserver and ObserveExpiry.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is what the Options set.
type config struct {
	mp    metric.MeterProvider
	tp    trace.TracerProvider
	grant bool
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	return c
}

func (c config) meter() metric.Meter {
	return c.mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version()))
}

// WithMeterProvider sets the MeterProvider the metrics are recorded
// with. Nil, the default, means the global one, otel.GetMeterProvider,
// as it is when NewObserver or ObserveExpiry is called.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// WithTracerProvider sets the TracerProvider the refresh spans are
// started with. Nil, the default, means the global one,
// otel.GetTracerProvider, as it is when NewObserver is called.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// WithGrantAttribute adds the attribute grant, the grant's key in its
// Grants, to every metric and span of a grant that has one. It is off by
// default: each grant is then a time series of its own, and how many a
// backend can take is the application's call.
func WithGrantAttribute() Option {
	return optionFunc(func(c *config) { c.grant = true })
}

// observer holds the instruments behind the funcs of an Observer.
type observer struct {
	tracer     trace.Tracer
	grant      bool
	refreshes  metric.Int64Counter
	duration   metric.Float64Histogram
	waiters    metric.Int64Histogram
	rejections metric.Int64Counter
	saveFails  metric.Int64Counter
	lockWait   metric.Float64Histogram
}

// NewObserver returns a pandadocauth.Observer that records the metrics
// of the package documentation and a span per refresh. Set it as a
// TokenSource's (or a Grants') Observer. It returns an error when an
// instrument cannot be created.
//
// The Observer is safe for concurrent use by multiple goroutines, and
// one Observer may serve many sources.
func NewObserver(opts ...Option) (*pandadocauth.Observer, error) {
	c := newConfig(opts)
	m := c.meter()
	o := &observer{
		tracer: c.tp.Tracer(ScopeName, trace.WithInstrumentationVersion(Version())),
		grant:  c.grant,
	}
	var err, e error
	o.refreshes, e = m.Int64Counter("pandadocauth.refreshes",
		metric.WithUnit("{refresh}"),
		metric.WithDescription("Refreshes (flights) that ended, by reason and outcome."))
	err = errors.Join(err, e)
	o.duration, e = m.Float64Histogram("pandadocauth.refresh.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of refreshes, from start to end, all attempts included."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	o.waiters, e = m.Int64Histogram("pandadocauth.refresh.waiters",
		metric.WithUnit("{caller}"),
		metric.WithDescription("Callers that waited for a refresh."),
		metric.WithExplicitBucketBoundaries(waiterBuckets...))
	err = errors.Join(err, e)
	o.rejections, e = m.Int64Counter("pandadocauth.rejections",
		metric.WithUnit("{response}"),
		metric.WithDescription("Responses 401 from the API, by the outcome of their replay."))
	err = errors.Join(err, e)
	o.saveFails, e = m.Int64Counter("pandadocauth.save.failures",
		metric.WithUnit("{failure}"),
		metric.WithDescription("Failed Saves of a token to the Store."))
	err = errors.Join(err, e)
	o.lockWait, e = m.Float64Histogram("pandadocauth.lock.wait_time",
		metric.WithUnit("s"),
		metric.WithDescription("Time spent waiting for the Store's Locker."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	limits, e := newLimitMetrics(m) // limiter.go
	err = errors.Join(err, e)
	if err != nil {
		return nil, fmt.Errorf("otelpandadocauth: creating instruments: %w", err)
	}
	obs := &pandadocauth.Observer{
		RefreshStart: o.refreshStart,
		RefreshJoin:  o.refreshJoin,
		RefreshDone:  o.refreshDone,
		Rejected:     o.rejected,
		SaveFailed:   o.saveFailed,
		LockWaited:   o.lockWaited,
	}
	limits.install(obs)
	return obs, nil
}

// spanKey is the context key of a refresh's span. The span is kept under
// a key of its own, besides the current span, so that the funcs find it
// even when another Observer wraps these and changes the context, and
// never end a span they did not start.
type spanKey struct{}

// flightSpan returns the span refreshStart put in ctx, or nil.
func flightSpan(ctx context.Context) trace.Span {
	span, _ := ctx.Value(spanKey{}).(trace.Span)
	return span
}

// attrs returns the attributes kv, with the grant's if it is wanted and
// there is one.
func (o *observer) attrs(grant string, kv ...attribute.KeyValue) attribute.Set {
	if o.grant && grant != "" {
		kv = append(kv, keyGrant.String(grant))
	}
	return attribute.NewSet(kv...)
}

// refreshStart starts the flight's span, a child of the caller's span if
// ctx has one.
func (o *observer) refreshStart(ctx context.Context, info pandadocauth.RefreshStartInfo) context.Context {
	kv := []attribute.KeyValue{keyReason.String(info.Reason.String())}
	if o.grant && info.Grant != "" {
		kv = append(kv, keyGrant.String(info.Grant))
	}
	ctx, span := o.tracer.Start(ctx, spanName, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(kv...))
	return context.WithValue(ctx, spanKey{}, span)
}

// refreshJoin links the flight's span to the span of a caller that
// joined it.
func (o *observer) refreshJoin(flight, caller context.Context) {
	sc := trace.SpanContextFromContext(caller)
	span := flightSpan(flight)
	if span == nil || !sc.IsValid() || !span.IsRecording() {
		return
	}
	span.AddLink(trace.Link{SpanContext: sc})
}

// refreshDone records the flight's metrics and ends its span.
func (o *observer) refreshDone(ctx context.Context, info pandadocauth.RefreshDoneInfo) {
	set := metric.WithAttributeSet(o.attrs(info.Grant,
		keyReason.String(info.Reason.String()),
		keyOutcome.String(info.Outcome.String())))
	o.refreshes.Add(ctx, 1, set)
	o.duration.Record(ctx, info.Duration.Seconds(), set)
	o.waiters.Record(ctx, int64(info.Waiters), set)
	span := flightSpan(ctx)
	if span == nil {
		return
	}
	span.SetAttributes(
		keyOutcome.String(info.Outcome.String()),
		keyAttempts.Int(info.Attempts),
		keyWaiters.Int(info.Waiters))
	if info.Err != nil {
		// The core's errors carry no secret.
		span.SetAttributes(keyErrorType.String(info.Outcome.String()))
		span.SetStatus(codes.Error, info.Err.Error())
	}
	span.End()
}

// rejected counts a 401.
func (o *observer) rejected(ctx context.Context, info pandadocauth.RejectedInfo) {
	o.rejections.Add(ctx, 1, metric.WithAttributeSet(o.attrs(info.Grant,
		keyOutcome.String(info.Replay.String()),
		keyInvalidated.Bool(info.Invalidated))))
}

// saveFailed counts a failed Save and notes it on the flight's span.
func (o *observer) saveFailed(ctx context.Context, info pandadocauth.SaveFailedInfo) {
	o.saveFails.Add(ctx, 1, metric.WithAttributeSet(o.attrs(info.Grant, keyRetry.Bool(info.Retry))))
	if span := flightSpan(ctx); span != nil && info.Err != nil {
		span.AddEvent("pandadocauth.save_failed", trace.WithAttributes(
			keyRetry.Bool(info.Retry),
			attribute.String("exception.message", info.Err.Error())))
	}
}

// lockWaited records a wait for the Locker.
func (o *observer) lockWaited(ctx context.Context, info pandadocauth.LockWaitedInfo) {
	outcome := "acquired"
	if info.Err != nil {
		outcome = "failed"
	}
	o.lockWait.Record(ctx, info.Duration.Seconds(), metric.WithAttributeSet(o.attrs(info.Grant, keyOutcome.String(outcome))))
}
