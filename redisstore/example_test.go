package redisstore_test

import (
	"context"
	"log"
	"net/http"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/redisstore"
)

// Every replica of a service runs this: they share the grant's token
// through Redis, and one of them refreshes it when it expires. (The
// example needs a Redis server, so it is compiled but not run.)
func Example() {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), Password: os.Getenv("REDIS_PASSWORD")})
	defer rdb.Close()

	store := &redisstore.Store{Client: rdb, Key: "workspace-42"}
	src := &pandadocauth.TokenSource{
		Config: &pandadocauth.Config{ClientID: os.Getenv("PANDADOC_CLIENT_ID"), ClientSecret: os.Getenv("PANDADOC_CLIENT_SECRET")},
		Store:  store, // a Locker too: refreshes are serialised across replicas
	}
	client := pandadocauth.NewClient(nil, src)

	resp, err := client.Get("https://api.pandadoc.com/public/v1/documents")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	log.Println(resp.Status)
}

// A Redis Cluster: the grant's token and lock keys share a hash tag, so
// they live on one node.
func ExampleStore_cluster() {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"redis-1:6379", "redis-2:6379", "redis-3:6379"}})
	defer rdb.Close()
	store := &redisstore.Store{Client: rdb, Key: "workspace-42"}
	_, _ = store.Load(context.Background())
}

// Many customers' workspaces served through one pandadocauth.Grants: one
// token key and one lock key per grant key. (The example needs a Redis
// server, so it is compiled but not run.)
func ExampleKeyed() {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), Password: os.Getenv("REDIS_PASSWORD")})
	defer rdb.Close()

	grants := &pandadocauth.Grants{
		Config: &pandadocauth.Config{ClientID: os.Getenv("PANDADOC_CLIENT_ID"), ClientSecret: os.Getenv("PANDADOC_CLIENT_SECRET")},
		Store:  &redisstore.Keyed{Client: rdb}, // a KeyedLocker too: each grant's refreshes are serialised across replicas
	}
	defer grants.Wait()
	client := &http.Client{Transport: grants.Transport(nil)}

	ctx := pandadocauth.WithGrant(context.Background(), "workspace-42")
	req, err := http.NewRequestWithContext(ctx, "GET", "https://api.pandadoc.com/public/v1/documents", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	log.Println(resp.Status)
}
