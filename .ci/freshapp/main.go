// Command freshapp is a user's app, in a module of its own outside the
// repository: .ci/freshapp.sh builds it from a checkout with the README's
// install recipe, and runs it against the PostgreSQL and Redis that
// .ci/run started. It uses the root module, pgstore, redisstore and
// otelpandadocauth, and exits with status 1 if anything fails.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/otelpandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
	"github.com/gopandadoc/pandadocauth/pgstore"
	"github.com/gopandadoc/pandadocauth/redisstore"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "freshapp:", err)
		os.Exit(1)
	}
	fmt.Println("freshapp: pgstore, redisstore and otelpandadocauth work")
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pandadoc := pandadoctest.NewServer(pandadoctest.WithRotation(true))
	defer pandadoc.Close()
	obs, err := otelpandadocauth.NewObserver()
	if err != nil {
		return err
	}
	documents := pandadoc.URL + "/public/v1/documents"

	// One grant in PostgreSQL, through a TokenSource.
	pool, err := pgxpool.New(ctx, os.Getenv("PANDADOCAUTH_PG_DSN"))
	if err != nil {
		return err
	}
	defer pool.Close()
	pg := &pgstore.Store{Pool: pool, Table: "freshapp_tokens", Key: "freshapp"}
	if err := pg.CreateTable(ctx); err != nil {
		return err
	}
	defer pool.Exec(context.Background(), "DROP TABLE freshapp_tokens")
	if err := pg.Save(ctx, pandadoc.IssueToken()); err != nil {
		return err
	}
	src := &pandadocauth.TokenSource{Config: pandadoc.Config(), Store: pg, Observer: obs}
	defer src.Wait()
	refreshed, err := src.Refresh(ctx)
	if err != nil {
		return err
	}
	if stored, err := pg.Load(ctx); err != nil || stored == nil || stored.RefreshToken != refreshed.RefreshToken {
		return fmt.Errorf("pgstore does not hold the refreshed token (%v)", err)
	}
	if err := get(pandadocauth.NewClient(nil, src), mustRequest(ctx, documents)); err != nil {
		return fmt.Errorf("with pgstore: %w", err)
	}

	// Many grants in Redis, through Grants.
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("PANDADOCAUTH_REDIS_ADDR"), Password: os.Getenv("PANDADOCAUTH_REDIS_PASSWORD")})
	defer rdb.Close()
	keyed := &redisstore.Keyed{Client: rdb, Prefix: "freshapp:"}
	grants := &pandadocauth.Grants{Config: pandadoc.Config(), Store: keyed, Observer: obs}
	defer grants.Wait()
	client := &http.Client{Transport: grants.Transport(nil)}
	for _, workspace := range []string{"acme", "globex"} {
		if err := keyed.Save(ctx, workspace, pandadoc.IssueToken()); err != nil {
			return err
		}
		defer keyed.Delete(context.Background(), workspace)
		if err := get(client, mustRequest(pandadocauth.WithGrant(ctx, workspace), documents)); err != nil {
			return fmt.Errorf("with redisstore, %s: %w", workspace, err)
		}
	}
	return nil
}

func mustRequest(ctx context.Context, url string) *http.Request {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		panic(err)
	}
	return req
}

// get sends req and wants a 200.
func get(client *http.Client, req *http.Request) error {
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", req.URL.Path, resp.Status)
	}
	return nil
}
