#!/bin/sh
# The namespace and the search attributes the approval gate publishes (listings need
# them); safe to run again.
set -eu
ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
attempt=0
until temporal operator cluster health --address "$ADDRESS"; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 60 ] || { echo "Temporal did not become healthy"; exit 1; }
    sleep 5
done
temporal operator namespace describe -n "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1 \
    || temporal operator namespace create -n "$NAMESPACE" --address "$ADDRESS"
for attribute in HitlState=Keyword HitlPendingApprovals=Int HitlApprovalIds=KeywordList \
    HitlUpdatedAt=Datetime; do
    name="${attribute%%=*}"
    type="${attribute#*=}"
    temporal operator search-attribute create --namespace "$NAMESPACE" --address "$ADDRESS" \
        --name "$name" --type "$type" || echo "search attribute $name exists"
done
echo "namespace $NAMESPACE ready"
