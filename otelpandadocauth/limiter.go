package otelpandadocauth

import (
	"context"
	"errors"

	"github.com/gopandadoc/pandadocauth"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The attribute keys of a Limiter's metrics. They never carry the grant:
// a Limiter's key may be any user of the application, and each would be
// a time series of its own.
const (
	keyClass      = attribute.Key("class")
	keyHintSource = attribute.Key("hint_source")
	keyRetried    = attribute.Key("retried")
)

// limitMetrics holds the instruments of a pandadocauth.Limiter's events.
type limitMetrics struct {
	wait      metric.Float64Histogram
	queued    metric.Int64UpDownCounter
	throttled metric.Int64Counter
	retries   metric.Int64Counter
}

func newLimitMetrics(m metric.Meter) (*limitMetrics, error) {
	var l limitMetrics
	var err, e error
	l.wait, e = m.Float64Histogram("pandadocauth.ratelimit.wait",
		metric.WithUnit("s"),
		metric.WithDescription("Time requests waited for a slot under PandaDoc's rate limits, client-side, by class and outcome."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	l.queued, e = m.Int64UpDownCounter("pandadocauth.ratelimit.queued",
		metric.WithUnit("{request}"),
		metric.WithDescription("Requests waiting for a slot under PandaDoc's rate limits, by class."))
	err = errors.Join(err, e)
	l.throttled, e = m.Int64Counter("pandadocauth.ratelimit.throttled",
		metric.WithUnit("{response}"),
		metric.WithDescription("Responses 429 from PandaDoc, by class, where their wait came from, and whether the request was sent again."))
	err = errors.Join(err, e)
	l.retries, e = m.Int64Counter("pandadocauth.retries",
		metric.WithUnit("{retry}"),
		metric.WithDescription("Requests a Limiter sent again, by class and reason."))
	err = errors.Join(err, e)
	return &l, err
}

// install sets the Limiter's funcs of o.
func (l *limitMetrics) install(o *pandadocauth.Observer) {
	o.LimitWait = l.limitWait
	o.LimitWaited = l.limitWaited
	o.Throttled = l.throttledResp
	o.Retried = l.retried
}

func (l *limitMetrics) limitWait(ctx context.Context, info pandadocauth.LimitWaitInfo) {
	l.queued.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(keyClass.String(info.Class.String()))))
}

func (l *limitMetrics) limitWaited(ctx context.Context, info pandadocauth.LimitWaitedInfo) {
	class := keyClass.String(info.Class.String())
	l.queued.Add(ctx, -1, metric.WithAttributeSet(attribute.NewSet(class)))
	outcome := "sent"
	if info.Err != nil {
		outcome = "canceled"
	}
	l.wait.Record(ctx, info.Waited.Seconds(), metric.WithAttributeSet(attribute.NewSet(class, keyOutcome.String(outcome))))
}

func (l *limitMetrics) throttledResp(ctx context.Context, info pandadocauth.ThrottledInfo) {
	l.throttled.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(
		keyClass.String(info.Class.String()),
		keyHintSource.String(info.HintSource.String()),
		keyRetried.Bool(info.Retried))))
}

func (l *limitMetrics) retried(ctx context.Context, info pandadocauth.RetriedInfo) {
	l.retries.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(
		keyClass.String(info.Class.String()),
		keyReason.String(info.Reason.String()))))
}
