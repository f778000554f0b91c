package otelpandadocauth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Ranger is a set of token sources: a pandadocauth.Grants, or Sources.
// Range calls f for each source with its grant's key, until f returns
// false.
type Ranger interface {
	Range(f func(grant string, s *pandadocauth.TokenSource) bool)
}

// Sources is a Ranger of token sources of their own: their grant is
// empty.
type Sources []*pandadocauth.TokenSource

var _ Ranger = Sources(nil)

// Range calls f for each source of s that is not nil, with an empty
// grant.
func (s Sources) Range(f func(grant string, s *pandadocauth.TokenSource) bool) {
	for _, src := range s {
		if src != nil && !f("", src) {
			return
		}
	}
}

// ObserveExpiry registers the gauge pandadocauth.token.time_to_expiry,
// in seconds, for the sources of r: the time left until the token each
// one serves expires, negative once it has expired. A source that has
// served no token yet, or whose token has no expiry, is not reported,
// and neither is a nil source.
// The sources whose attributes are the same (all of them, unless
// WithGrantAttribute is given) are reported as one value: the smallest,
// the token that expires first.
//
// r is ranged over at each collection, so grants added to a Grants later
// are reported too. Unregister the returned Registration to stop.
func ObserveExpiry(r Ranger, opts ...Option) (metric.Registration, error) {
	if r == nil {
		return nil, errors.New("otelpandadocauth: ObserveExpiry: no sources")
	}
	c := newConfig(opts)
	return observeExpiry(c, r, time.Now)
}

// observeExpiry is ObserveExpiry reading the time from now.
func observeExpiry(c config, r Ranger, now func() time.Time) (metric.Registration, error) {
	m := c.meter()
	gauge, err := m.Float64ObservableGauge("pandadocauth.token.time_to_expiry",
		metric.WithUnit("s"),
		metric.WithDescription("Time left until the token served expires; the smallest of the sources with the same attributes."))
	if err != nil {
		return nil, fmt.Errorf("otelpandadocauth: creating the expiry gauge: %w", err)
	}
	reg, err := m.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		t := now()
		least := map[string]float64{}
		r.Range(func(grant string, s *pandadocauth.TokenSource) bool {
			if s == nil {
				return true
			}
			exp := s.Expiry()
			if exp.IsZero() {
				return true
			}
			if !c.grant {
				grant = ""
			}
			left := exp.Sub(t).Seconds()
			if v, ok := least[grant]; !ok || left < v {
				least[grant] = left
			}
			return true
		})
		for grant, v := range least {
			if grant == "" {
				obs.ObserveFloat64(gauge, v)
				continue
			}
			obs.ObserveFloat64(gauge, v, metric.WithAttributeSet(attribute.NewSet(keyGrant.String(grant))))
		}
		return nil
	}, gauge)
	if err != nil {
		return nil, fmt.Errorf("otelpandadocauth: registering the expiry gauge: %w", err)
	}
	return reg, nil
}
