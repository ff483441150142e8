import { render } from 'svelte/server';
import { describe, expect, it } from 'vitest';
import type { ProposalView } from '../bindings';
import ProposalCard from './ProposalCard.svelte';

const ALICE = 'lkpk1alicealicealicealicealice7k2d';
const CAROL = 'lkpk1carolcarolcarolcarolcarol9x4m';

function proposal(over: Partial<ProposalView>): ProposalView {
  return {
    id: 'ab'.repeat(32),
    device_id: 'lkdev1door',
    device_name: 'Holiday flat',
    kind: 'transfer',
    owners: [CAROL],
    threshold: 1,
    signatures: 1,
    approvals: 1,
    needed: 2,
    proposed_by: ALICE,
    proposed_by_me: false,
    new_owners: [CAROL],
    awaiting_acceptance: [CAROL],
    signed_by_me: false,
    my_part: 'accept',
    ...over,
  };
}

const show = (p: ProposalView) =>
  render(ProposalCard, { props: { proposal: p, onApprove: () => {}, onAccept: () => {} } }).body;

describe('ProposalCard', () => {
  it('offers the recipient Accept, and names who proposed it', () => {
    const html = show(proposal({}));
    expect(html).toContain('data-testid="accept"');
    expect(html).not.toContain('data-testid="approve"');
    expect(html).toContain('Proposed by lkpk1alic…7k2d');
    expect(html).toContain('Hand Holiday flat over to lkpk1caro…9x4m');
    expect(html).toContain('1 of 2 owner approvals · waiting for lkpk1caro…9x4m to accept');
  });

  it('offers a co-owner Approve, not Accept', () => {
    const html = show(proposal({ my_part: 'approve', awaiting_acceptance: [] }));
    expect(html).toContain('data-testid="approve"');
    expect(html).not.toContain('data-testid="accept"');
    expect(html).toContain('every new owner accepted');
  });

  it('says so when the proposal is yours, and offers nothing to sign again', () => {
    const html = show(proposal({ my_part: 'nothing', signed_by_me: true, proposed_by_me: true }));
    expect(html).toContain('Proposed by you');
    expect(html).toContain('You signed it.');
    expect(html).not.toContain('<button');
  });
});
